// Apache Kafka's Java client reads topics from the beginning to their end offset and prints
// every record as "topic<TAB>offset<TAB>key<TAB>value" (value "<null>" for a tombstone), then
// "java read ok". For tests/interop/test_compaction.py: compacted topics, offset gaps, batches
// the cleaner recompressed.
// Usage: java -cp <jars>:. JavaCompactedRead HOST:PORT TOPIC [TOPIC...]
import java.nio.charset.StandardCharsets;
import java.time.Duration;
import java.util.ArrayList;
import java.util.List;
import java.util.Map;
import java.util.Properties;

import org.apache.kafka.clients.consumer.ConsumerConfig;
import org.apache.kafka.clients.consumer.ConsumerRecord;
import org.apache.kafka.clients.consumer.KafkaConsumer;
import org.apache.kafka.common.TopicPartition;
import org.apache.kafka.common.serialization.ByteArrayDeserializer;

public class JavaCompactedRead {
    public static void main(String[] args) throws Exception {
        Properties cp = new Properties();
        cp.put(ConsumerConfig.BOOTSTRAP_SERVERS_CONFIG, args[0]);
        cp.put(ConsumerConfig.ENABLE_AUTO_COMMIT_CONFIG, "false");
        cp.put(ConsumerConfig.KEY_DESERIALIZER_CLASS_CONFIG, ByteArrayDeserializer.class.getName());
        cp.put(ConsumerConfig.VALUE_DESERIALIZER_CLASS_CONFIG, ByteArrayDeserializer.class.getName());
        StringBuilder out = new StringBuilder();
        try (KafkaConsumer<byte[], byte[]> c = new KafkaConsumer<>(cp)) {
            for (int i = 1; i < args.length; i++) {
                TopicPartition tp = new TopicPartition(args[i], 0);
                c.assign(List.of(tp));
                c.seekToBeginning(List.of(tp));
                Map<TopicPartition, Long> end = c.endOffsets(List.of(tp), Duration.ofSeconds(20));
                long stop = end.get(tp);
                long deadline = System.currentTimeMillis() + 60_000;
                while (c.position(tp) < stop) {
                    if (System.currentTimeMillis() > deadline) {
                        throw new IllegalStateException(args[i] + ": stuck at " + c.position(tp) + " of " + stop);
                    }
                    for (ConsumerRecord<byte[], byte[]> r : c.poll(Duration.ofMillis(500))) {
                        String k = r.key() == null ? "<null>" : new String(r.key(), StandardCharsets.UTF_8);
                        String v = r.value() == null ? "<null>" : new String(r.value(), StandardCharsets.UTF_8);
                        out.append(args[i]).append('\t').append(r.offset()).append('\t')
                                .append(k).append('\t').append(v).append('\n');
                    }
                }
            }
        }
        System.out.print(out);
        System.out.println("java read ok");
    }
}
