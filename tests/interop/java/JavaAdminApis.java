// Apache Kafka's Java Admin client (kafka-clients 4.x) against a chronik cluster: describeLogDirs,
// electLeaders (not needed, unknown partition, all partitions), alterPartitionReassignments (a
// replica moves to another broker and the move completes: listPartitionReassignments becomes
// empty and describeTopics shows the new replica; bad assignments and a cancel with no move get
// Kafka's exceptions) and describeMetadataQuorum.
// Usage: java -cp <jars>:. JavaAdminApis HOST:PORT[,HOST:PORT...] BROKERS
import java.time.Duration;
import java.util.ArrayList;
import java.util.Collections;
import java.util.HashMap;
import java.util.List;
import java.util.Map;
import java.util.Optional;
import java.util.Properties;
import java.util.Set;
import java.util.concurrent.ExecutionException;

import org.apache.kafka.clients.admin.Admin;
import org.apache.kafka.clients.admin.AdminClientConfig;
import org.apache.kafka.clients.admin.LogDirDescription;
import org.apache.kafka.clients.admin.NewPartitionReassignment;
import org.apache.kafka.clients.admin.NewTopic;
import org.apache.kafka.clients.admin.PartitionReassignment;
import org.apache.kafka.clients.admin.QuorumInfo;
import org.apache.kafka.clients.admin.ReplicaInfo;
import org.apache.kafka.clients.admin.TopicDescription;
import org.apache.kafka.clients.producer.KafkaProducer;
import org.apache.kafka.clients.producer.ProducerConfig;
import org.apache.kafka.clients.producer.ProducerRecord;
import org.apache.kafka.common.ElectionType;
import org.apache.kafka.common.Node;
import org.apache.kafka.common.TopicPartition;
import org.apache.kafka.common.errors.ElectionNotNeededException;
import org.apache.kafka.common.errors.InvalidReplicaAssignmentException;
import org.apache.kafka.common.errors.NoReassignmentInProgressException;
import org.apache.kafka.common.errors.UnknownTopicOrPartitionException;
import org.apache.kafka.common.serialization.StringSerializer;

public class JavaAdminApis {
    static final long START = System.currentTimeMillis();

    static void step(String what) {
        System.err.println("[" + (System.currentTimeMillis() - START) + " ms] " + what);
    }

    static void check(boolean ok, String what) {
        if (!ok) {
            throw new IllegalStateException(what);
        }
    }

    /** The cause of a failed future, which must be of class `want`. */
    static void expectFailure(org.apache.kafka.common.KafkaFuture<?> f, Class<?> want, String what)
            throws InterruptedException {
        try {
            f.get();
        } catch (ExecutionException e) {
            check(want.isInstance(e.getCause()), what + ": expected " + want.getSimpleName() + ", got " + e.getCause());
            return;
        }
        throw new IllegalStateException(what + ": expected " + want.getSimpleName() + ", but it succeeded");
    }

    public static void main(String[] args) throws Exception {
        String bootstrap = args[0];
        int brokers = Integer.parseInt(args[1]);
        Properties props = new Properties();
        props.put(AdminClientConfig.BOOTSTRAP_SERVERS_CONFIG, bootstrap);
        props.put(AdminClientConfig.REQUEST_TIMEOUT_MS_CONFIG, "30000");
        try (Admin admin = Admin.create(props)) {
            List<Integer> ids = new ArrayList<>();
            for (Node n : admin.describeCluster().nodes().get()) {
                ids.add(n.id());
            }
            Collections.sort(ids);
            check(ids.size() == brokers, "brokers: " + ids);

            String moved = "java-admin-move";
            String elected = "java-admin-elect";
            admin.createTopics(List.of(new NewTopic(moved, 1, (short) 1),
                    new NewTopic(elected, 1, (short) brokers))).all().get();
            Properties pp = new Properties();
            pp.put(ProducerConfig.BOOTSTRAP_SERVERS_CONFIG, bootstrap);
            pp.put(ProducerConfig.ACKS_CONFIG, "all");
            try (KafkaProducer<String, String> p =
                    new KafkaProducer<>(pp, new StringSerializer(), new StringSerializer())) {
                for (int i = 0; i < 100; i++) {
                    p.send(new ProducerRecord<>(moved, 0, "k" + i, "value-" + i));
                }
                p.flush();
            }
            TopicPartition mtp = new TopicPartition(moved, 0);
            TopicPartition etp = new TopicPartition(elected, 0);
            int from = replicas(admin, moved).get(0);

            step("describeLogDirs");
            Map<Integer, Map<String, LogDirDescription>> dirs =
                admin.describeLogDirs(ids).allDescriptions().get();
            check(dirs.keySet().equals(Set.copyOf(ids)), "log dirs of every broker: " + dirs.keySet());
            for (int id : ids) {
                Map<String, LogDirDescription> d = dirs.get(id);
                check(d.size() == 1, "one log dir on broker " + id + ": " + d);
                LogDirDescription desc = d.values().iterator().next();
                check(desc.error() == null, "log dir error on " + id + ": " + desc.error());
                check(desc.totalBytes().isPresent() && desc.totalBytes().getAsLong() > 0,
                    "total bytes on " + id + ": " + desc);
                check(desc.usableBytes().isPresent(), "usable bytes on " + id);
                ReplicaInfo e = desc.replicaInfos().get(etp);
                check(e != null && e.offsetLag() >= 0, "every broker holds " + etp + ": " + desc);
                ReplicaInfo m = desc.replicaInfos().get(mtp);
                check((m != null) == (id == from), "only broker " + from + " holds " + mtp + ": " + desc);
                if (m != null) {
                    check(m.size() > 0, "size of " + mtp + ": " + m);
                }
            }

            step("electLeaders");
            Map<TopicPartition, Optional<Throwable>> el =
                admin.electLeaders(ElectionType.PREFERRED, Set.of(etp)).partitions().get();
            check(el.get(etp).isPresent() && el.get(etp).get() instanceof ElectionNotNeededException,
                "preferred election of a partition led by its preferred replica: " + el);
            el = admin.electLeaders(ElectionType.UNCLEAN, Set.of(etp)).partitions().get();
            check(el.get(etp).isPresent() && el.get(etp).get() instanceof ElectionNotNeededException,
                "unclean election of a partition with a live leader: " + el);
            TopicPartition unknown = new TopicPartition("java-admin-nope", 0);
            el = admin.electLeaders(ElectionType.PREFERRED, Set.of(unknown)).partitions().get();
            check(el.get(unknown).isPresent() && el.get(unknown).get() instanceof UnknownTopicOrPartitionException,
                "election of an unknown partition: " + el);
            el = admin.electLeaders(ElectionType.PREFERRED, null).partitions().get();
            check(el.values().stream().noneMatch(Optional::isPresent), "elect all partitions: " + el);

            step("alterPartitionReassignments");
            int to = ids.stream().filter(i -> i != from).findFirst().orElseThrow();
            expectFailure(admin.alterPartitionReassignments(Map.of(mtp,
                    Optional.of(new NewPartitionReassignment(List.of(9999))))).all(),
                InvalidReplicaAssignmentException.class, "a move to an unknown broker");
            expectFailure(admin.alterPartitionReassignments(Map.of(mtp, Optional.empty())).all(),
                NoReassignmentInProgressException.class, "a cancel with no move");
            admin.alterPartitionReassignments(Map.of(mtp,
                Optional.of(new NewPartitionReassignment(List.of(to))))).all().get();
            long deadline = System.currentTimeMillis() + 60_000;
            Map<TopicPartition, PartitionReassignment> ongoing;
            while (true) {
                ongoing = admin.listPartitionReassignments().reassignments().get();
                if (ongoing.isEmpty() || System.currentTimeMillis() > deadline) {
                    break;
                }
                Thread.sleep(200);
            }
            check(ongoing.isEmpty(), "the move completes: " + ongoing);
            while (!replicas(admin, moved).equals(List.of(to)) && System.currentTimeMillis() < deadline) {
                Thread.sleep(200);
            }
            check(replicas(admin, moved).equals(List.of(to)),
                "describeTopics shows the new replica " + to + ": " + replicas(admin, moved));

            step("describeMetadataQuorum");
            QuorumInfo q = admin.describeMetadataQuorum().quorumInfo().get();
            List<Integer> voters = new ArrayList<>();
            for (QuorumInfo.ReplicaState r : q.voters()) {
                voters.add(r.replicaId());
            }
            Collections.sort(voters);
            check(voters.equals(ids), "voters " + voters + " are the brokers " + ids);
            check(voters.contains(q.leaderId()), "leader " + q.leaderId() + " is a voter");
            check(q.leaderEpoch() > 0 && q.highWatermark() > 0, "epoch and high watermark: " + q);
            QuorumInfo.ReplicaState leader = q.voters().stream()
                .filter(r -> r.replicaId() == q.leaderId()).findFirst().orElseThrow();
            check(leader.logEndOffset() >= q.highWatermark(), "leader's log end: " + q);
            check(q.nodes().keySet().equals(Set.copyOf(ids)), "nodes: " + q.nodes());
            step("done");
        }
        System.out.println("java admin ok: kafka-clients 4.3.0");
    }

    static List<Integer> replicas(Admin admin, String topic) throws Exception {
        TopicDescription d = admin.describeTopics(List.of(topic)).allTopicNames().get().get(topic);
        List<Integer> r = new ArrayList<>();
        for (Node n : d.partitions().get(0).replicas()) {
            r.add(n.id());
        }
        return r;
    }
}
