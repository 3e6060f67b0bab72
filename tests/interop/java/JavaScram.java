// Kafka's Java client and SASL/SCRAM: Admin alterUserScramCredentials creates a user (over the
// PLAINTEXT listener), describeUserScramCredentials shows it, then a producer and a consumer
// log in as that user with SCRAM-SHA-512 over SASL_SSL and read back what was written.
// Args: plaintext bootstrap, SASL_SSL bootstrap, CA PEM file.
import java.time.Duration;
import java.util.*;
import org.apache.kafka.clients.admin.*;
import org.apache.kafka.clients.consumer.*;
import org.apache.kafka.clients.producer.*;
import org.apache.kafka.common.TopicPartition;
import org.apache.kafka.common.serialization.*;

public class JavaScram {
    static void check(boolean ok, String what) {
        if (!ok) throw new AssertionError(what);
    }

    public static void main(String[] args) throws Exception {
        String plain = args[0], saslSsl = args[1], ca = args[2];
        Properties a = new Properties();
        a.put(AdminClientConfig.BOOTSTRAP_SERVERS_CONFIG, plain);
        try (Admin admin = Admin.create(a)) {
            ScramCredentialInfo info = new ScramCredentialInfo(ScramMechanism.SCRAM_SHA_512, 8192);
            admin.alterUserScramCredentials(List.of(
                    new UserScramCredentialUpsertion("javauser", info, "java-pw"))).all().get();
            UserScramCredentialsDescription d =
                    admin.describeUserScramCredentials(List.of("javauser")).description("javauser").get();
            check(d.credentialInfos().size() == 1, "one credential: " + d.credentialInfos());
            ScramCredentialInfo got = d.credentialInfos().get(0);
            check(got.mechanism() == ScramMechanism.SCRAM_SHA_512 && got.iterations() == 8192,
                    "described " + got);
        }
        Properties s = new Properties();
        s.put("bootstrap.servers", saslSsl);
        s.put("security.protocol", "SASL_SSL");
        s.put("sasl.mechanism", "SCRAM-SHA-512");
        s.put("sasl.jaas.config", "org.apache.kafka.common.security.scram.ScramLoginModule required "
                + "username=\"javauser\" password=\"java-pw\";");
        s.put("ssl.truststore.type", "PEM");
        s.put("ssl.truststore.location", ca);
        Properties p = new Properties();
        p.putAll(s);
        p.put("key.serializer", StringSerializer.class.getName());
        p.put("value.serializer", StringSerializer.class.getName());
        p.put("acks", "all");
        int n = 20;
        try (Producer<String, String> producer = new KafkaProducer<>(p)) {
            for (int i = 0; i < n; i++) {
                producer.send(new ProducerRecord<>("java-scram", 0, "k" + i, "v" + i)).get();
            }
        }
        Properties c = new Properties();
        c.putAll(s);
        c.put("key.deserializer", StringDeserializer.class.getName());
        c.put("value.deserializer", StringDeserializer.class.getName());
        c.put("group.id", "java-scram-reader");
        c.put("enable.auto.commit", "false");
        List<String> seen = new ArrayList<>();
        try (Consumer<String, String> consumer = new KafkaConsumer<>(c)) {
            TopicPartition tp = new TopicPartition("java-scram", 0);
            consumer.assign(List.of(tp));
            consumer.seekToBeginning(List.of(tp));
            long deadline = System.currentTimeMillis() + 30_000;
            while (seen.size() < n && System.currentTimeMillis() < deadline) {
                for (ConsumerRecord<String, String> r : consumer.poll(Duration.ofMillis(500))) {
                    seen.add(r.value());
                }
            }
        }
        for (int i = 0; i < n; i++) check(seen.size() == n && seen.get(i).equals("v" + i), "read back " + seen);
        System.out.println("java scram ok: kafka-clients " + org.apache.kafka.common.utils.AppInfoParser.getVersion());
    }
}
