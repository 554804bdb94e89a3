package streamtrain.compare;
final class Nop {}
