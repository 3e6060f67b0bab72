// Kafka's Java client, SASL/SCRAM and ACLs: Admin alterUserScramCredentials creates a user (over
// the PLAINTEXT listener, whose anonymous principal is the super user),
// describeUserScramCredentials shows it, createAcls lets it write and read one topic and
// describeAcls lists exactly those bindings; then a producer and a consumer log in as that user
// with SCRAM-SHA-512 over SASL_SSL and read back what was written. deleteAcls takes WRITE away and
// the next send fails with TopicAuthorizationException.
// Args: plaintext bootstrap, SASL_SSL bootstrap, CA PEM file.
import java.time.Duration;
import java.util.*;
import org.apache.kafka.clients.admin.*;
import org.apache.kafka.clients.consumer.*;
import org.apache.kafka.clients.producer.*;
import org.apache.kafka.common.TopicPartition;
import org.apache.kafka.common.acl.AccessControlEntry;
import org.apache.kafka.common.acl.AccessControlEntryFilter;
import org.apache.kafka.common.acl.AclBinding;
import org.apache.kafka.common.acl.AclBindingFilter;
import org.apache.kafka.common.acl.AclOperation;
import org.apache.kafka.common.acl.AclPermissionType;
import org.apache.kafka.common.errors.TopicAuthorizationException;
import org.apache.kafka.common.resource.PatternType;
import org.apache.kafka.common.resource.ResourcePattern;
import org.apache.kafka.common.resource.ResourcePatternFilter;
import org.apache.kafka.common.resource.ResourceType;
import org.apache.kafka.common.serialization.*;

public class JavaScram {
    static void check(boolean ok, String what) {
        if (!ok) throw new AssertionError(what);
    }

    static final String WHO = "User:javauser";

    static AclBinding allow(ResourcePattern on, AclOperation op) {
        return new AclBinding(on, new AccessControlEntry(WHO, "*", op, AclPermissionType.ALLOW));
    }

    static AclBindingFilter writeOnTopic() {
        return new AclBindingFilter(
                new ResourcePatternFilter(ResourceType.TOPIC, "java-scram", PatternType.LITERAL),
                new AccessControlEntryFilter(WHO, null, AclOperation.WRITE, AclPermissionType.ANY));
    }

    public static void main(String[] args) throws Exception {
        String plain = args[0], saslSsl = args[1], ca = args[2];
        Properties a = new Properties();
        a.put(AdminClientConfig.BOOTSTRAP_SERVERS_CONFIG, plain);
        Admin admin = Admin.create(a);
        {
            ScramCredentialInfo info = new ScramCredentialInfo(ScramMechanism.SCRAM_SHA_512, 8192);
            admin.alterUserScramCredentials(List.of(
                    new UserScramCredentialUpsertion("javauser", info, "java-pw"))).all().get();
            UserScramCredentialsDescription d =
                    admin.describeUserScramCredentials(List.of("javauser")).description("javauser").get();
            check(d.credentialInfos().size() == 1, "one credential: " + d.credentialInfos());
            ScramCredentialInfo got = d.credentialInfos().get(0);
            check(got.mechanism() == ScramMechanism.SCRAM_SHA_512 && got.iterations() == 8192,
                    "described " + got);
            admin.createTopics(List.of(new NewTopic("java-scram", 1, (short) 1))).all().get();
            ResourcePattern topic = new ResourcePattern(ResourceType.TOPIC, "java-scram", PatternType.LITERAL);
            ResourcePattern group = new ResourcePattern(ResourceType.GROUP, "java-scram-", PatternType.PREFIXED);
            // A USER resource (KIP-373 delegation tokens): stored and listed like the others.
            ResourcePattern user = new ResourcePattern(ResourceType.USER, WHO, PatternType.LITERAL);
            List<AclBinding> acls = List.of(
                    allow(topic, AclOperation.WRITE), allow(topic, AclOperation.READ),
                    allow(group, AclOperation.READ), allow(user, AclOperation.DESCRIBE_TOKENS));
            admin.createAcls(acls).all().get();
            Collection<AclBinding> mine = admin.describeAcls(new AclBindingFilter(ResourcePatternFilter.ANY,
                    new AccessControlEntryFilter(WHO, null, AclOperation.ANY, AclPermissionType.ANY)))
                    .values().get();
            check(new HashSet<>(mine).equals(new HashSet<>(acls)), "described " + mine);
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
        Collection<AclBinding> deleted = admin.deleteAcls(List.of(writeOnTopic())).all().get();
        check(deleted.size() == 1 && deleted.iterator().next().entry().operation() == AclOperation.WRITE,
                "deleted " + deleted);
        check(admin.describeAcls(writeOnTopic()).values().get().isEmpty(), "WRITE still listed");
        admin.close();
        p.put("max.block.ms", "15000");
        p.put("delivery.timeout.ms", "15000");
        p.put("request.timeout.ms", "10000");
        // Without WRITE on any topic an idempotent producer is refused at InitProducerId
        // (CLUSTER_AUTHORIZATION_FAILED, as Kafka does); this one shows the Produce refusal.
        p.put("enable.idempotence", "false");
        try (Producer<String, String> producer = new KafkaProducer<>(p)) {
            producer.send(new ProducerRecord<>("java-scram", 0, "k", "after")).get();
            throw new AssertionError("a send without WRITE succeeded");
        } catch (java.util.concurrent.ExecutionException e) {
            check(e.getCause() instanceof TopicAuthorizationException, "send without WRITE: " + e);
        } catch (TopicAuthorizationException e) {
            // The producer may refuse before it sends, from the metadata it was answered.
        }
        System.out.println("java scram ok: kafka-clients " + org.apache.kafka.common.utils.AppInfoParser.getVersion());
    }
}
