// Apache Kafka's Java client (kafka-clients 4.x) against chronik-server, for the admin APIs:
// incrementalAlterConfigs on a BROKER resource (the cluster-wide default and one broker) and
// describeConfigs showing it with its source, a read-only broker config refused, and
// describeProducers after an idempotent produce; a consumer reads the records back (so the
// client's newest Produce, Fetch, ListOffsets and Metadata versions are exercised).
// Usage: java -cp <jars>:. JavaBrokerConfigs HOST:PORT
import java.time.Duration;
import java.util.ArrayList;
import java.util.Collection;
import java.util.List;
import java.util.Map;
import java.util.Properties;
import java.util.concurrent.ExecutionException;

import org.apache.kafka.clients.admin.Admin;
import org.apache.kafka.clients.admin.AdminClientConfig;
import org.apache.kafka.clients.admin.AlterConfigOp;
import org.apache.kafka.clients.admin.Config;
import org.apache.kafka.clients.admin.ConfigEntry;
import org.apache.kafka.clients.admin.DescribeConfigsOptions;
import org.apache.kafka.clients.admin.NewTopic;
import org.apache.kafka.clients.admin.ProducerState;
import org.apache.kafka.clients.consumer.ConsumerConfig;
import org.apache.kafka.clients.consumer.ConsumerRecord;
import org.apache.kafka.clients.consumer.KafkaConsumer;
import org.apache.kafka.clients.producer.KafkaProducer;
import org.apache.kafka.clients.producer.ProducerConfig;
import org.apache.kafka.clients.producer.ProducerRecord;
import org.apache.kafka.common.TopicPartition;
import org.apache.kafka.common.config.ConfigResource;
import org.apache.kafka.common.errors.InvalidRequestException;
import org.apache.kafka.common.serialization.StringDeserializer;
import org.apache.kafka.common.serialization.StringSerializer;

public class JavaBrokerConfigs {
    static void check(boolean ok, String what) {
        if (!ok) {
            throw new IllegalStateException(what);
        }
    }

    static ConfigEntry describe(Admin admin, ConfigResource r, String key) throws Exception {
        Config c = admin.describeConfigs(List.of(r), new DescribeConfigsOptions().includeSynonyms(true))
                .all().get().get(r);
        ConfigEntry e = c.get(key);
        check(e != null, key + " described on " + r);
        return e;
    }

    public static void main(String[] args) throws Exception {
        String bootstrap = args[0];
        Properties ap = new Properties();
        ap.put(AdminClientConfig.BOOTSTRAP_SERVERS_CONFIG, bootstrap);
        try (Admin admin = Admin.create(ap)) {
            String node = admin.describeCluster().nodes().get().iterator().next().idString();
            ConfigResource cluster = new ConfigResource(ConfigResource.Type.BROKER, "");
            ConfigResource broker = new ConfigResource(ConfigResource.Type.BROKER, node);

            // The cluster-wide default and this broker's own value.
            admin.incrementalAlterConfigs(Map.of(
                    cluster, List.of(new AlterConfigOp(new ConfigEntry("log.retention.ms", "3600000"), AlterConfigOp.OpType.SET)),
                    broker, List.of(new AlterConfigOp(new ConfigEntry("message.max.bytes", "2000000"), AlterConfigOp.OpType.SET))))
                    .all().get();
            ConfigEntry retention = describe(admin, broker, "log.retention.ms");
            check(retention.value().equals("3600000"), "log.retention.ms " + retention);
            check(retention.source() == ConfigEntry.ConfigSource.DYNAMIC_DEFAULT_BROKER_CONFIG, "source " + retention);
            check(!retention.isReadOnly(), "log.retention.ms is dynamic");
            ConfigEntry max = describe(admin, broker, "message.max.bytes");
            check(max.value().equals("2000000"), "message.max.bytes " + max);
            check(max.source() == ConfigEntry.ConfigSource.DYNAMIC_BROKER_CONFIG, "source " + max);
            check(max.synonyms().size() == 2, "synonyms " + max.synonyms());
            check(describe(admin, broker, "num.partitions").isReadOnly(), "num.partitions is read-only");
            System.out.println("broker configs ok: " + retention + " " + max);

            // A read-only broker config: INVALID_REQUEST, as Kafka.
            try {
                admin.incrementalAlterConfigs(Map.of(cluster, List.of(
                        new AlterConfigOp(new ConfigEntry("num.partitions", "3"), AlterConfigOp.OpType.SET))))
                        .all().get();
                check(false, "altering num.partitions must fail");
            } catch (ExecutionException e) {
                check(e.getCause() instanceof InvalidRequestException, "read-only: " + e.getCause());
            }

            String topic = "java-admin-apis";
            admin.createTopics(List.of(new NewTopic(topic, 1, (short) 1))).all().get();
            Properties pp = new Properties();
            pp.put(ProducerConfig.BOOTSTRAP_SERVERS_CONFIG, bootstrap);
            pp.put(ProducerConfig.ENABLE_IDEMPOTENCE_CONFIG, "true");
            pp.put(ProducerConfig.ACKS_CONFIG, "all");
            pp.put(ProducerConfig.KEY_SERIALIZER_CLASS_CONFIG, StringSerializer.class.getName());
            pp.put(ProducerConfig.VALUE_SERIALIZER_CLASS_CONFIG, StringSerializer.class.getName());
            try (KafkaProducer<String, String> p = new KafkaProducer<>(pp)) {
                for (int i = 0; i < 5; i++) {
                    p.send(new ProducerRecord<>(topic, 0, "k" + i, "v" + i)).get();
                }
            }
            TopicPartition tp = new TopicPartition(topic, 0);
            Collection<ProducerState> producers =
                    admin.describeProducers(List.of(tp)).partitionResult(tp).get().activeProducers();
            check(producers.size() == 1, "one producer: " + producers);
            ProducerState s = producers.iterator().next();
            check(s.lastSequence() == 4, "last sequence " + s);
            check(s.producerId() >= 0 && s.lastTimestamp() > 0, "producer " + s);
            check(s.coordinatorEpoch().isEmpty() && s.currentTransactionStartOffset().isEmpty(), "no txn " + s);
            System.out.println("describe producers ok: " + s);

            Properties cp = new Properties();
            cp.put(ConsumerConfig.BOOTSTRAP_SERVERS_CONFIG, bootstrap);
            cp.put(ConsumerConfig.GROUP_ID_CONFIG, "java-admin-apis");
            cp.put(ConsumerConfig.AUTO_OFFSET_RESET_CONFIG, "earliest");
            cp.put(ConsumerConfig.KEY_DESERIALIZER_CLASS_CONFIG, StringDeserializer.class.getName());
            cp.put(ConsumerConfig.VALUE_DESERIALIZER_CLASS_CONFIG, StringDeserializer.class.getName());
            List<String> got = new ArrayList<>();
            try (KafkaConsumer<String, String> c = new KafkaConsumer<>(cp)) {
                c.subscribe(List.of(topic));
                long deadline = System.currentTimeMillis() + 60_000;
                while (got.size() < 5 && System.currentTimeMillis() < deadline) {
                    for (ConsumerRecord<String, String> r : c.poll(Duration.ofMillis(500))) {
                        got.add(r.value());
                    }
                }
            }
            check(got.equals(List.of("v0", "v1", "v2", "v3", "v4")), "consumed " + got);

            // Back to the static configs.
            admin.incrementalAlterConfigs(Map.of(
                    cluster, List.of(new AlterConfigOp(new ConfigEntry("log.retention.ms", ""), AlterConfigOp.OpType.DELETE)),
                    broker, List.of(new AlterConfigOp(new ConfigEntry("message.max.bytes", ""), AlterConfigOp.OpType.DELETE))))
                    .all().get();
            ConfigEntry after = describe(admin, broker, "message.max.bytes");
            check(after.source() == ConfigEntry.ConfigSource.STATIC_BROKER_CONFIG, "deleted: " + after);
        }
        System.out.println("java admin ok");
    }
}
