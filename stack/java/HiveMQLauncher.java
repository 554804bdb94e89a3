// Starts HiveMQ CE (embedded edition) with the given config/data/extensions folders
// and stops it cleanly on SIGTERM. Run without a build: java -cp "<jars>/*" HiveMQLauncher.java CONF DATA EXT
import com.hivemq.embedded.EmbeddedHiveMQ;

import java.nio.file.Path;
import java.util.concurrent.CountDownLatch;
import java.util.concurrent.TimeUnit;

public class HiveMQLauncher {
    public static void main(String[] args) throws Exception {
        if (args.length != 3) {
            System.err.println("usage: HiveMQLauncher <config-folder> <data-folder> <extensions-folder>");
            System.exit(2);
        }
        EmbeddedHiveMQ hivemq = EmbeddedHiveMQ.builder()
                .withConfigurationFolder(Path.of(args[0]))
                .withDataFolder(Path.of(args[1]))
                .withExtensionsFolder(Path.of(args[2]))
                .build();
        CountDownLatch stopped = new CountDownLatch(1);
        Runtime.getRuntime().addShutdownHook(new Thread(() -> {
            System.out.println("{\"event\":\"hivemq_stopping\"}");
            try {
                hivemq.stop().get(30, TimeUnit.SECONDS);
                hivemq.close();
            } catch (Exception e) {
                System.err.println("{\"event\":\"hivemq_stop_failed\",\"error\":\"" + e + "\"}");
            }
            stopped.countDown();
        }));
        hivemq.start().join();
        System.out.println("{\"event\":\"hivemq_started\"}");
        stopped.await();
    }
}
