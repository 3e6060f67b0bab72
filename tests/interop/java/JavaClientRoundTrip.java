// Apache Kafka's Java client (kafka-clients 4.x) against chronik-server: Admin (describe cluster,
// create/describe/delete topics, a bad topic name, topic configs, list offsets, group offsets),
// an idempotent acks=all producer per compression codec (keyed records with headers), and a
// consumer group that reads everything back in order per partition and commits.
// Usage: java -cp <jars>:. JavaClientRoundTrip HOST:PORT[,HOST:PORT...] [BROKERS]
// With BROKERS (default 1) the cluster must have that many brokers and the topic that many replicas.
import java.nio.charset.StandardCharsets;
import java.time.Duration;
import java.util.ArrayList;
import java.util.Collection;
import java.util.HashMap;
import java.util.List;
import java.util.Map;
import java.util.Properties;
import java.util.concurrent.ExecutionException;
import java.util.concurrent.Future;

import org.apache.kafka.clients.admin.Admin;
import org.apache.kafka.clients.admin.AdminClientConfig;
import org.apache.kafka.clients.admin.Config;
import org.apache.kafka.clients.admin.ListOffsetsResult;
import org.apache.kafka.clients.admin.NewTopic;
import org.apache.kafka.clients.admin.OffsetSpec;
import org.apache.kafka.clients.admin.TopicDescription;
import org.apache.kafka.clients.consumer.ConsumerConfig;
import org.apache.kafka.clients.consumer.ConsumerRecord;
import org.apache.kafka.clients.consumer.KafkaConsumer;
import org.apache.kafka.clients.consumer.OffsetAndMetadata;
import org.apache.kafka.clients.producer.KafkaProducer;
import org.apache.kafka.clients.producer.ProducerConfig;
import org.apache.kafka.clients.producer.ProducerRecord;
import org.apache.kafka.clients.producer.RecordMetadata;
import org.apache.kafka.common.Node;
import org.apache.kafka.common.TopicPartition;
import org.apache.kafka.common.config.ConfigResource;
import org.apache.kafka.common.errors.InvalidTopicException;
import org.apache.kafka.common.errors.RecordTooLargeException;
import org.apache.kafka.common.header.Header;
import org.apache.kafka.common.serialization.StringDeserializer;
import org.apache.kafka.common.serialization.StringSerializer;

public class JavaClientRoundTrip {
    static final String[] CODECS = {"none", "gzip", "snappy", "lz4", "zstd"};
    static final int PER_CODEC = 600;
    static final int PARTITIONS = 3;

    static final long START = System.currentTimeMillis();

    static void step(String what) {
        System.err.println("[" + (System.currentTimeMillis() - START) + " ms] " + what);
    }

    static void check(boolean ok, String what) {
        if (!ok) {
            throw new IllegalStateException(what);
        }
    }

    public static void main(String[] args) throws Exception {
        String bootstrap = args[0];
        int brokers = args.length > 1 ? Integer.parseInt(args[1]) : 1;
        String topic = "java-" + System.currentTimeMillis();
        int total = PER_CODEC * CODECS.length;

        Properties ap = new Properties();
        ap.put(AdminClientConfig.BOOTSTRAP_SERVERS_CONFIG, bootstrap);
        ap.put(AdminClientConfig.REQUEST_TIMEOUT_MS_CONFIG, 20000);
        try (Admin admin = Admin.create(ap)) {
            Collection<Node> nodes = admin.describeCluster().nodes().get();
            check(nodes.size() == brokers, "describeCluster: expected " + brokers + " brokers, got " + nodes);
            check(admin.describeCluster().controller().get() != null, "describeCluster: no controller");

            admin.createTopics(List.of(new NewTopic(topic, PARTITIONS, (short) brokers))).all().get();
            TopicDescription td = admin.describeTopics(List.of(topic)).allTopicNames().get().get(topic);
            check(td.partitions().size() == PARTITIONS, "describeTopics: " + td);
            check(td.partitions().stream().allMatch(p -> p.leader() != null && p.isr().size() == brokers),
                    "a partition has no leader or a short ISR: " + td);
            check(admin.listTopics().names().get().contains(topic), "listTopics misses " + topic);

            try {
                admin.createTopics(List.of(new NewTopic("bad/name", 1, (short) 1))).all().get();
                throw new IllegalStateException("a topic named bad/name was created");
            } catch (ExecutionException e) {
                check(e.getCause() instanceof InvalidTopicException, "bad name gave " + e.getCause());
            }

            ConfigResource res = new ConfigResource(ConfigResource.Type.TOPIC, topic);
            Config cfg = admin.describeConfigs(List.of(res)).all().get().get(res);
            check(cfg.get("cleanup.policy") != null, "describeConfigs: no cleanup.policy in " + cfg);
        }

        step("admin checks done");
        // One idempotent acks=all producer per codec; each record says where it belongs.
        int n = 0;
        for (String codec : CODECS) {
            Properties pp = new Properties();
            pp.put(ProducerConfig.BOOTSTRAP_SERVERS_CONFIG, bootstrap);
            pp.put(ProducerConfig.ACKS_CONFIG, "all");
            pp.put(ProducerConfig.ENABLE_IDEMPOTENCE_CONFIG, true);
            pp.put(ProducerConfig.COMPRESSION_TYPE_CONFIG, codec);
            pp.put(ProducerConfig.LINGER_MS_CONFIG, 5);
            pp.put(ProducerConfig.MAX_REQUEST_SIZE_CONFIG, 8 << 20);
            pp.put(ProducerConfig.KEY_SERIALIZER_CLASS_CONFIG, StringSerializer.class.getName());
            pp.put(ProducerConfig.VALUE_SERIALIZER_CLASS_CONFIG, StringSerializer.class.getName());
            try (KafkaProducer<String, String> producer = new KafkaProducer<>(pp)) {
                List<Future<RecordMetadata>> acks = new ArrayList<>();
                for (int i = 0; i < PER_CODEC; i++, n++) {
                    ProducerRecord<String, String> r =
                            new ProducerRecord<>(topic, n % PARTITIONS, "k" + n, codec + ":" + n);
                    r.headers().add("n", Integer.toString(n).getBytes(StandardCharsets.UTF_8));
                    acks.add(producer.send(r));
                }
                producer.flush();
                for (Future<RecordMetadata> f : acks) {
                    check(f.get().offset() >= 0, "no offset for a " + codec + " record");
                }
                if (codec.equals("none")) {
                    // Larger than message.max.bytes (1 MiB by default) and sent uncompressed (the
                    // broker checks the batch as sent, as Kafka does): refused, not stored. The
                    // client's own max.request.size is raised so that the broker must refuse it.
                    ProducerRecord<String, String> tooBig =
                            new ProducerRecord<>(topic, 0, "big", "x".repeat(2 << 20));
                    try {
                        RecordMetadata m = producer.send(tooBig).get();
                        throw new IllegalStateException("a 2 MiB record was accepted at offset " + m.offset());
                    } catch (ExecutionException e) {
                        check(e.getCause() instanceof RecordTooLargeException, "2 MiB record gave " + e.getCause());
                    }
                }
            }
        }

        step("produced");
        Map<TopicPartition, OffsetSpec> earliest = new HashMap<>();
        Map<TopicPartition, OffsetSpec> latest = new HashMap<>();
        for (int p = 0; p < PARTITIONS; p++) {
            earliest.put(new TopicPartition(topic, p), OffsetSpec.earliest());
            latest.put(new TopicPartition(topic, p), OffsetSpec.latest());
        }
        long stored = 0;
        try (Admin admin = Admin.create(ap)) {
            for (ListOffsetsResult.ListOffsetsResultInfo i : admin.listOffsets(earliest).all().get().values()) {
                check(i.offset() == 0, "earliest offset " + i.offset());
            }
            for (ListOffsetsResult.ListOffsetsResultInfo i : admin.listOffsets(latest).all().get().values()) {
                stored += i.offset();
            }
        }
        check(stored == total, "stored " + stored + " != " + total);

        step("offsets listed");
        String group = "java-group-" + topic;
        Properties cp = new Properties();
        cp.put(ConsumerConfig.BOOTSTRAP_SERVERS_CONFIG, bootstrap);
        cp.put(ConsumerConfig.GROUP_ID_CONFIG, group);
        cp.put(ConsumerConfig.AUTO_OFFSET_RESET_CONFIG, "earliest");
        cp.put(ConsumerConfig.ENABLE_AUTO_COMMIT_CONFIG, false);
        cp.put(ConsumerConfig.KEY_DESERIALIZER_CLASS_CONFIG, StringDeserializer.class.getName());
        cp.put(ConsumerConfig.VALUE_DESERIALIZER_CLASS_CONFIG, StringDeserializer.class.getName());
        int[] last = new int[PARTITIONS];
        java.util.Arrays.fill(last, -1);
        int seen = 0;
        try (KafkaConsumer<String, String> consumer = new KafkaConsumer<>(cp)) {
            consumer.subscribe(List.of(topic));
            long deadline = System.currentTimeMillis() + 60000;
            while (seen < total && System.currentTimeMillis() < deadline) {
                for (ConsumerRecord<String, String> r : consumer.poll(Duration.ofMillis(500))) {
                    String[] v = r.value().split(":");
                    int i = Integer.parseInt(v[1]);
                    check(r.key().equals("k" + i), "key " + r.key() + " for value " + r.value());
                    check(i % PARTITIONS == r.partition(), "record " + i + " in partition " + r.partition());
                    check(v[0].equals(CODECS[i / PER_CODEC]), "record " + i + " says codec " + v[0]);
                    Header h = r.headers().lastHeader("n");
                    check(h != null && new String(h.value(), StandardCharsets.UTF_8).equals(v[1]),
                            "header of record " + i);
                    check(i > last[r.partition()], "partition " + r.partition() + " out of order at " + i);
                    last[r.partition()] = i;
                    seen++;
                }
            }
            check(seen == total, "consumed " + seen + " of " + total);
            consumer.commitSync();
        }

        step("consumed and committed");
        try (Admin admin = Admin.create(ap)) {
            Map<TopicPartition, OffsetAndMetadata> committed =
                    admin.listConsumerGroupOffsets(group).partitionsToOffsetAndMetadata().get();
            long sum = committed.values().stream().mapToLong(OffsetAndMetadata::offset).sum();
            check(sum == total, "committed " + sum + " != " + total);
            admin.deleteTopics(List.of(topic)).all().get();
            check(!admin.listTopics().names().get().contains(topic), "topic still listed after delete");
        }
        System.out.println("java ok: kafka-clients " + org.apache.kafka.common.utils.AppInfoParser.getVersion()
                + ", " + total + " records over " + CODECS.length + " codecs, read back in order by a group, committed");
    }
}
