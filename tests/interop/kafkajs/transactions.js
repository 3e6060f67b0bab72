// KafkaJS transactions: producer.transaction() commits 90 records and aborts 60 more (over 3
// partitions); a read_committed consumer (readUncommitted: false) then sees exactly the 90
// committed ones, and a read_uncommitted one all 150.
// Usage: node transactions.js HOST:PORT
const { Kafka, logLevel } = require('kafkajs');

async function readAll(kafka, topic, readUncommitted, expected) {
  const groupId = `kjs-txn-reader-${readUncommitted ? 'all' : 'committed'}-${topic}`;
  const consumer = kafka.consumer({ groupId, readUncommitted, sessionTimeout: 10000 });
  await consumer.connect();
  await consumer.subscribe({ topic, fromBeginning: true });
  const values = [];
  // Bounded: every record expected, then 3 s without news to catch extra ones; 60 s at most.
  let quiet = null;
  let timer = null;
  await new Promise((resolve, reject) => {
    const settle = () => {
      clearTimeout(quiet);
      if (values.length >= expected) quiet = setTimeout(resolve, 3000);
    };
    timer = setTimeout(() => reject(new Error(`timed out after ${values.length} of ${expected}`)), 60000);
    consumer.run({
      eachMessage: async ({ message }) => {
        values.push(message.value.toString());
        settle();
      },
    }).catch(reject);
  }).finally(() => {
    // Both timers cleared: a pending one would keep Node running (60 s) after main() is done.
    clearTimeout(timer);
    clearTimeout(quiet);
    return consumer.disconnect();
  });
  return values;
}

async function main() {
  const broker = process.argv[2];
  const kafka = new Kafka({ clientId: 'kafkajs-txn', brokers: [broker], logLevel: logLevel.NOTHING });
  const topic = 'kjs-txn-' + Date.now();
  const admin = kafka.admin();
  await admin.connect();
  await admin.createTopics({ topics: [{ topic, numPartitions: 3, replicationFactor: 1 }], waitForLeaders: true });

  const producer = kafka.producer({
    transactionalId: 'kjs-txn-id-' + topic,
    idempotent: true,
    maxInFlightRequests: 1,
  });
  await producer.connect();

  const committed = await producer.transaction();
  for (let batch = 0; batch < 3; batch++) {
    const messages = [];
    for (let i = batch * 30; i < (batch + 1) * 30; i++) messages.push({ value: `c${i}`, partition: i % 3 });
    await committed.send({ topic, messages });
  }
  await committed.commit();

  const aborted = await producer.transaction();
  const messages = [];
  for (let i = 0; i < 60; i++) messages.push({ value: `a${i}`, partition: i % 3 });
  await aborted.send({ topic, messages });
  await aborted.abort();

  // A transaction after an abort commits again under the same producer.
  const after = await producer.transaction();
  await after.send({ topic, messages: [{ value: 'c90', partition: 0 }] });
  await after.commit();
  await producer.disconnect();

  const want = [...Array(91).keys()].map((i) => `c${i}`).sort();
  const seen = (await readAll(kafka, topic, false, 91)).sort();
  if (JSON.stringify(seen) !== JSON.stringify(want)) {
    throw new Error(`read_committed saw ${seen.length} records: ${seen.filter((v) => v.startsWith('a')).length} aborted ones, ${new Set(seen).size} distinct`);
  }
  const all = await readAll(kafka, topic, true, 151);
  if (all.length !== 151) throw new Error(`read_uncommitted saw ${all.length} records, not 151`);

  await admin.deleteTopics({ topics: [topic] });
  await admin.disconnect();
  console.log('kafkajs transactions ok: 91 committed and 60 aborted; read_committed saw exactly the 91, read_uncommitted all 151');
}

main().catch((e) => { console.error('kafkajs transactions FAILED:', e.message || e); process.exit(1); });
