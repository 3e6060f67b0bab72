// A consume-transform-produce loop with Apache Kafka's Java client (kafka-clients 4.x): every
// poll of topic IN becomes one transaction that writes the transformed records to OUT and
// commits the consumer's offsets with sendOffsetsToTransaction. test_java_exactly_once.py kills
// and restarts brokers while it runs; the loop handles the errors as Kafka documents for
// exactly-once processing and, at the end, reads OUT with read_committed and checks that it
// holds "out-<i>" exactly once for every input "in-<i>" (0 <= i < N) and nothing else.
//
// Usage: java -cp <jars>:. JavaExactlyOnceLoop HOST:PORT[,...] N
// stdin (one command a line): "allow K" lets the loop process input until it has committed K
// records; "hold" makes the next transaction stop after its records are written (flushed) and
// print "HOLDING", until "release"; "coordinator" prints "COORDINATOR <node id> <state>" of the
// transactional id.
// stdout: "COMMITTED <records> ..." after each transaction, "java eos ok ..." at the end.
import java.time.Duration;
import java.util.ArrayList;
import java.util.HashMap;
import java.util.List;
import java.util.Map;
import java.util.Properties;
import java.util.Set;
import java.util.concurrent.Future;
import java.util.concurrent.TimeUnit;
import java.io.BufferedReader;
import java.io.InputStreamReader;
import java.nio.charset.StandardCharsets;

import org.apache.kafka.clients.admin.Admin;
import org.apache.kafka.clients.admin.AdminClientConfig;
import org.apache.kafka.clients.admin.NewTopic;
import org.apache.kafka.clients.admin.TransactionDescription;
import org.apache.kafka.clients.consumer.ConsumerConfig;
import org.apache.kafka.clients.consumer.ConsumerRecord;
import org.apache.kafka.clients.consumer.ConsumerRecords;
import org.apache.kafka.clients.consumer.KafkaConsumer;
import org.apache.kafka.clients.consumer.OffsetAndMetadata;
import org.apache.kafka.clients.producer.KafkaProducer;
import org.apache.kafka.clients.producer.ProducerConfig;
import org.apache.kafka.clients.producer.ProducerRecord;
import org.apache.kafka.clients.producer.RecordMetadata;
import org.apache.kafka.common.KafkaException;
import org.apache.kafka.common.TopicPartition;
import org.apache.kafka.common.serialization.StringDeserializer;
import org.apache.kafka.common.serialization.StringSerializer;

public class JavaExactlyOnceLoop {
    static final String IN = "eos-in";
    static final String OUT = "eos-out";
    static final String TXN_ID = "eos-loop";
    static final String GROUP = "eos-group";
    static final int PARTITIONS = 3;
    // The whole loop, failovers included, must finish within this; then it gives up and says so.
    static final long LOOP_LIMIT_MS = 150_000;
    static final long START = System.currentTimeMillis();

    static volatile long allowed = 0;
    static volatile boolean hold = false;
    static volatile boolean released = false;
    static String bootstrap;

    static void step(String what) {
        System.err.println("[" + System.currentTimeMillis() + "] " + what);
    }

    static void check(boolean ok, String what) {
        if (!ok) {
            throw new IllegalStateException(what);
        }
    }

    static synchronized void say(String line) {
        System.out.println(line);
        System.out.flush();
    }

    static Admin admin() {
        Properties ap = new Properties();
        ap.put(AdminClientConfig.BOOTSTRAP_SERVERS_CONFIG, bootstrap);
        ap.put(AdminClientConfig.REQUEST_TIMEOUT_MS_CONFIG, 10000);
        ap.put(AdminClientConfig.DEFAULT_API_TIMEOUT_MS_CONFIG, 30000);
        return Admin.create(ap);
    }

    static KafkaProducer<String, String> transactionalProducer() {
        Properties pp = new Properties();
        pp.put(ProducerConfig.BOOTSTRAP_SERVERS_CONFIG, bootstrap);
        pp.put(ProducerConfig.TRANSACTIONAL_ID_CONFIG, TXN_ID);
        pp.put(ProducerConfig.TRANSACTION_TIMEOUT_CONFIG, 30000);
        pp.put(ProducerConfig.REQUEST_TIMEOUT_MS_CONFIG, 10000);
        pp.put(ProducerConfig.DELIVERY_TIMEOUT_MS_CONFIG, 60000);
        pp.put(ProducerConfig.MAX_BLOCK_MS_CONFIG, 30000);
        pp.put(ProducerConfig.LINGER_MS_CONFIG, 2);
        pp.put(ProducerConfig.RETRY_BACKOFF_MS_CONFIG, 50);
        pp.put(ProducerConfig.KEY_SERIALIZER_CLASS_CONFIG, StringSerializer.class.getName());
        pp.put(ProducerConfig.VALUE_SERIALIZER_CLASS_CONFIG, StringSerializer.class.getName());
        KafkaProducer<String, String> p = new KafkaProducer<>(pp);
        p.initTransactions();
        return p;
    }

    static Properties consumerProps(String group) {
        Properties cp = new Properties();
        cp.put(ConsumerConfig.BOOTSTRAP_SERVERS_CONFIG, bootstrap);
        if (group != null) {
            cp.put(ConsumerConfig.GROUP_ID_CONFIG, group);
        }
        cp.put(ConsumerConfig.ISOLATION_LEVEL_CONFIG, "read_committed");
        cp.put(ConsumerConfig.ENABLE_AUTO_COMMIT_CONFIG, false);
        cp.put(ConsumerConfig.AUTO_OFFSET_RESET_CONFIG, "earliest");
        cp.put(ConsumerConfig.MAX_POLL_RECORDS_CONFIG, 40);
        cp.put(ConsumerConfig.REQUEST_TIMEOUT_MS_CONFIG, 10000);
        cp.put(ConsumerConfig.DEFAULT_API_TIMEOUT_MS_CONFIG, 30000);
        cp.put(ConsumerConfig.SESSION_TIMEOUT_MS_CONFIG, 30000);
        cp.put(ConsumerConfig.HEARTBEAT_INTERVAL_MS_CONFIG, 1000);
        cp.put(ConsumerConfig.KEY_DESERIALIZER_CLASS_CONFIG, StringDeserializer.class.getName());
        cp.put(ConsumerConfig.VALUE_DESERIALIZER_CLASS_CONFIG, StringDeserializer.class.getName());
        return cp;
    }

    static List<TopicPartition> partitions(String topic) {
        List<TopicPartition> tps = new ArrayList<>();
        for (int p = 0; p < PARTITIONS; p++) {
            tps.add(new TopicPartition(topic, p));
        }
        return tps;
    }

    /** Reads stdin commands from the test: "allow K" and "coordinator". */
    static void serveCommands() {
        Thread t = new Thread(() -> {
            try (BufferedReader in = new BufferedReader(new InputStreamReader(System.in, StandardCharsets.UTF_8))) {
                String line;
                while ((line = in.readLine()) != null) {
                    line = line.trim();
                    if (line.startsWith("allow ")) {
                        allowed = Long.parseLong(line.substring(6).trim());
                    } else if (line.equals("hold")) {
                        released = false;
                        hold = true;
                    } else if (line.equals("release")) {
                        released = true;
                    } else if (line.equals("coordinator")) {
                        try (Admin a = admin()) {
                            TransactionDescription d = a.describeTransactions(List.of(TXN_ID))
                                    .description(TXN_ID).get(30, TimeUnit.SECONDS);
                            say("COORDINATOR " + d.coordinatorId() + " " + d.state());
                        } catch (Exception e) {
                            say("COORDINATOR? " + e);
                        }
                    }
                }
            } catch (Exception e) {
                step("stdin: " + e);
            }
        }, "commands");
        t.setDaemon(true);
        t.start();
    }

    /** `what` again after each client error (a broker down, a coordinator moving) until `deadline`. */
    static <T> T retrying(long deadline, String what, java.util.function.Supplier<T> f) {
        while (true) {
            try {
                return f.get();
            } catch (KafkaException e) {
                check(System.currentTimeMillis() < deadline, what + " keeps failing: " + e);
                step(what + " failed, again: " + e);
                sleep(200);
            }
        }
    }

    /** The consumer's committed offsets (read stable: pending transactional offsets wait). */
    static long committedTotal(KafkaConsumer<String, String> consumer) {
        long total = 0;
        for (OffsetAndMetadata o : consumer.committed(Set.copyOf(partitions(IN))).values()) {
            if (o != null) {
                total += o.offset();
            }
        }
        return total;
    }

    /** Moves the consumer back to the group's committed offsets, after an aborted transaction. */
    static void rewind(KafkaConsumer<String, String> consumer) {
        Set<TopicPartition> assigned = consumer.assignment();
        if (assigned.isEmpty()) {
            return;
        }
        Map<TopicPartition, OffsetAndMetadata> committed = consumer.committed(assigned);
        for (TopicPartition tp : assigned) {
            OffsetAndMetadata o = committed.get(tp);
            if (o != null) {
                consumer.seek(tp, o.offset());
            } else {
                consumer.seekToBeginning(List.of(tp));
            }
        }
    }

    public static void main(String[] args) throws Exception {
        bootstrap = args[0];
        int n = Integer.parseInt(args[1]);
        serveCommands();

        try (Admin a = admin()) {
            a.createTopics(List.of(new NewTopic(IN, PARTITIONS, (short) 3),
                    new NewTopic(OUT, PARTITIONS, (short) 3))).all().get(60, TimeUnit.SECONDS);
        }
        // The input: N distinct records, idempotent at acks=all, before any broker is killed.
        Properties ip = new Properties();
        ip.put(ProducerConfig.BOOTSTRAP_SERVERS_CONFIG, bootstrap);
        ip.put(ProducerConfig.ACKS_CONFIG, "all");
        ip.put(ProducerConfig.ENABLE_IDEMPOTENCE_CONFIG, true);
        ip.put(ProducerConfig.LINGER_MS_CONFIG, 5);
        ip.put(ProducerConfig.DELIVERY_TIMEOUT_MS_CONFIG, 60000);
        ip.put(ProducerConfig.KEY_SERIALIZER_CLASS_CONFIG, StringSerializer.class.getName());
        ip.put(ProducerConfig.VALUE_SERIALIZER_CLASS_CONFIG, StringSerializer.class.getName());
        try (KafkaProducer<String, String> p = new KafkaProducer<>(ip)) {
            List<Future<RecordMetadata>> acks = new ArrayList<>();
            for (int i = 0; i < n; i++) {
                acks.add(p.send(new ProducerRecord<>(IN, i % PARTITIONS, "k" + i, "in-" + i)));
            }
            p.flush();
            for (Future<RecordMetadata> f : acks) {
                f.get(60, TimeUnit.SECONDS);
            }
        }
        step("produced " + n + " input records");
        say("INPUT " + n);

        KafkaProducer<String, String> producer = transactionalProducer();
        say("READY");
        long transactions = 0, aborts = 0, recreated = 0;
        long committed = 0;
        try (KafkaConsumer<String, String> consumer = new KafkaConsumer<>(consumerProps(GROUP))) {
            consumer.subscribe(List.of(IN));
            long deadline = System.currentTimeMillis() + LOOP_LIMIT_MS;
            while (committed < n) {
                check(System.currentTimeMillis() < deadline, "the loop did not finish in "
                        + LOOP_LIMIT_MS + " ms: " + committed + " of " + n + " records committed");
                if (committed >= allowed) {
                    // Held by the test until it has the cluster where it wants it; the group
                    // membership is kept alive by poll.
                    consumer.pause(consumer.assignment());
                    consumer.poll(Duration.ofMillis(20));
                    consumer.resume(consumer.paused());
                    continue;
                }
                ConsumerRecords<String, String> records = consumer.poll(Duration.ofMillis(200));
                if (records.isEmpty()) {
                    continue;
                }
                try {
                    producer.beginTransaction();
                    Map<TopicPartition, OffsetAndMetadata> offsets = new HashMap<>();
                    for (ConsumerRecord<String, String> r : records) {
                        check(r.value().startsWith("in-"), "unexpected input " + r.value());
                        producer.send(new ProducerRecord<>(OUT, r.key(), "out-" + r.value().substring(3)));
                        offsets.put(new TopicPartition(r.topic(), r.partition()),
                                new OffsetAndMetadata(r.offset() + 1));
                    }
                    if (hold) {
                        // The test kills a broker while this transaction is open with its records
                        // written to OUT.
                        hold = false;
                        producer.flush();
                        say("HOLDING");
                        long until = System.currentTimeMillis() + 60_000;
                        while (!released) {
                            check(System.currentTimeMillis() < until, "not released within 60 s");
                            sleep(10);
                        }
                        step("released");
                    }
                    producer.sendOffsetsToTransaction(offsets, consumer.groupMetadata());
                    producer.commitTransaction();
                    transactions++;
                } catch (KafkaException e) {
                    // Abortable errors: abort and process the records again from the committed
                    // offsets. If abort fails too (fenced, a fatal state, a commit whose outcome
                    // is unknown), close the producer: a new one with the same transactional id
                    // finishes or aborts whatever the old one left open (initTransactions).
                    step("transaction failed: " + e);
                    aborts++;
                    try {
                        producer.abortTransaction();
                    } catch (KafkaException e2) {
                        step("abort failed (" + e2 + "): a new producer");
                        producer.close(Duration.ZERO);
                        producer = null;
                        for (int attempt = 0; producer == null; attempt++) {
                            try {
                                producer = transactionalProducer();
                                recreated++;
                            } catch (KafkaException e3) {
                                check(attempt < 10 && System.currentTimeMillis() < deadline,
                                        "initTransactions keeps failing: " + e3);
                                step("initTransactions failed: " + e3);
                                Thread.sleep(500);
                            }
                        }
                    }
                    retrying(deadline, "rewind", () -> {
                        rewind(consumer);
                        return null;
                    });
                }
                committed = retrying(deadline, "committed offsets", () -> committedTotal(consumer));
                say("COMMITTED " + committed + " at " + System.currentTimeMillis());
            }
        } finally {
            if (producer != null) {
                producer.close(Duration.ofSeconds(5));
            }
        }
        step("loop done: " + transactions + " transactions, " + aborts + " failed, "
                + recreated + " producers recreated");
        verify(n);
        say("java eos ok: " + n + " records exactly once in " + transactions + " transactions ("
                + aborts + " failed, " + recreated + " producers recreated)");
    }

    /** OUT read with read_committed from the start: out-<i> exactly once for every i < n. */
    static void verify(int n) {
        try (KafkaConsumer<String, String> c = new KafkaConsumer<>(consumerProps(null));
             KafkaConsumer<String, String> raw = new KafkaConsumer<>(uncommittedProps())) {
            List<TopicPartition> tps = partitions(OUT);
            c.assign(tps);
            c.seekToBeginning(tps);
            // Every transaction has ended, so the last stable offset must reach the log end.
            long deadline = System.currentTimeMillis() + 30_000;
            Map<TopicPartition, Long> lso = c.endOffsets(tps);
            Map<TopicPartition, Long> leo = raw.endOffsets(tps);
            while (!lso.equals(leo)) {
                check(System.currentTimeMillis() < deadline,
                        "the last stable offsets " + lso + " stay below the log end offsets " + leo);
                sleep(200);
                lso = c.endOffsets(tps);
                leo = raw.endOffsets(tps);
            }
            int[] seen = new int[n];
            long read = 0;
            deadline = System.currentTimeMillis() + 60_000;
            while (!reached(c, tps, lso)) {
                check(System.currentTimeMillis() < deadline, "read_committed reads stop before "
                        + lso + " after " + read + " records");
                for (ConsumerRecord<String, String> r : c.poll(Duration.ofMillis(200))) {
                    read++;
                    check(r.value().startsWith("out-"), "unexpected output " + r.value());
                    int i = Integer.parseInt(r.value().substring(4));
                    check(i >= 0 && i < n, "output out of range: " + r.value());
                    seen[i]++;
                }
            }
            List<Integer> missing = new ArrayList<>(), twice = new ArrayList<>();
            for (int i = 0; i < n; i++) {
                if (seen[i] == 0) {
                    missing.add(i);
                } else if (seen[i] > 1) {
                    twice.add(i);
                }
            }
            check(missing.isEmpty() && twice.isEmpty(), read + " records read; missing "
                    + head(missing) + "; more than once " + head(twice));
            check(read == n, read + " records read for " + n + " inputs");
        }
    }

    static Properties uncommittedProps() {
        Properties p = consumerProps(null);
        p.put(ConsumerConfig.ISOLATION_LEVEL_CONFIG, "read_uncommitted");
        return p;
    }

    static boolean reached(KafkaConsumer<String, String> c, List<TopicPartition> tps, Map<TopicPartition, Long> end) {
        for (TopicPartition tp : tps) {
            if (c.position(tp) < end.get(tp)) {
                return false;
            }
        }
        return true;
    }

    static String head(List<Integer> xs) {
        return xs.size() + " " + xs.subList(0, Math.min(20, xs.size()));
    }

    static void sleep(long ms) {
        try {
            Thread.sleep(ms);
        } catch (InterruptedException e) {
            Thread.currentThread().interrupt();
        }
    }
}
