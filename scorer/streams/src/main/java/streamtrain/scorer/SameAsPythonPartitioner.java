package streamtrain.scorer;

import java.util.zip.CRC32;
import org.apache.kafka.streams.processor.StreamPartitioner;

/**
 * Keyed records land where the Python scorer's producer puts them (librdkafka's default
 * consistent_random: CRC32 of the key modulo the partition count), so a device's scores stay
 * in one partition whichever engine scored them. Records without a key: Kafka's default.
 */
final class SameAsPythonPartitioner implements StreamPartitioner<byte[], byte[]> {
    @Override
    @Deprecated
    public Integer partition(String topic, byte[] key, byte[] value, int numPartitions) {
        if (key == null) {
            return null;
        }
        CRC32 crc = new CRC32();
        crc.update(key);
        return (int) (crc.getValue() % numPartitions);
    }
}
