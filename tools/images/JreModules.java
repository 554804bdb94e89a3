// Prints the modules of a JRE image as OpenJDK builds one (the boot and platform modules; what
// Temurin ships as its JRE): tools/images/build.sh jlinks the stand-in JRE from them. No jdk.compiler.
public class JreModules {
    public static void main(String[] a) {
        ClassLoader platform = ClassLoader.getPlatformClassLoader();
        ModuleLayer.boot().modules().stream()
            .filter(m -> m.getClassLoader() == null || m.getClassLoader() == platform)
            .map(Module::getName).sorted().forEach(System.out::println);
    }
}
