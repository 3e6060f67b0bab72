// KafkaJS interop: admin create topic, produce keyed messages with headers (acks=-1, gzip),
// consume them back with a consumer group, commit, and check order per partition.
// Usage: node roundtrip.js HOST:PORT
const { Kafka, logLevel, CompressionTypes } = require('kafkajs');

async function main() {
  const broker = process.argv[2];
  const kafka = new Kafka({ clientId: 'kafkajs-interop', brokers: [broker], logLevel: logLevel.NOTHING });
  const topic = 'kjs-' + Date.now();
  const admin = kafka.admin();
  await admin.connect();
  await admin.createTopics({ topics: [{ topic, numPartitions: 3, replicationFactor: 1 }], waitForLeaders: true });
  const meta = await admin.fetchTopicMetadata({ topics: [topic] });
  if (meta.topics[0].partitions.length !== 3) throw new Error('expected 3 partitions');

  const producer = kafka.producer({ idempotent: true, maxInFlightRequests: 1 });
  await producer.connect();
  const total = 900;
  for (let batch = 0; batch < total / 100; batch++) {
    const messages = [];
    for (let i = batch * 100; i < (batch + 1) * 100; i++) {
      messages.push({ key: 'k' + i, value: String(i), partition: i % 3, headers: { n: String(i) } });
    }
    await producer.send({ topic, acks: -1, compression: CompressionTypes.GZIP, messages });
  }
  await producer.disconnect();

  const offsets = await admin.fetchTopicOffsets(topic);
  const stored = offsets.reduce((s, p) => s + Number(p.high), 0);
  if (stored !== total) throw new Error(`stored ${stored} != ${total}`);

  const consumer = kafka.consumer({ groupId: 'kjs-group-' + topic, sessionTimeout: 10000 });
  await consumer.connect();
  await consumer.subscribe({ topic, fromBeginning: true });
  const seen = { 0: [], 1: [], 2: [] };
  let count = 0;
  await new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`timed out after ${count} messages`)), 60000);
    consumer.run({
      eachMessage: async ({ partition, message }) => {
        if (message.headers.n.toString() !== message.value.toString()) reject(new Error('header mismatch'));
        seen[partition].push(Number(message.value.toString()));
        count++;
        if (count === total) { clearTimeout(timer); resolve(); }
      },
    }).catch(reject);
  });
  for (const p of [0, 1, 2]) {
    const xs = seen[p];
    for (let i = 1; i < xs.length; i++) if (xs[i] <= xs[i - 1]) throw new Error(`partition ${p} out of order`);
    if (xs.length !== total / 3) throw new Error(`partition ${p} has ${xs.length}`);
  }
  await consumer.disconnect();
  const committed = await admin.fetchOffsets({ groupId: 'kjs-group-' + topic, topics: [topic] });
  const sum = committed[0].partitions.reduce((s, p) => s + Number(p.offset), 0);
  if (sum !== total) throw new Error(`committed ${sum} != ${total}`);
  await admin.deleteTopics({ topics: [topic] });
  await admin.disconnect();
  console.log(`kafkajs ok: ${total} messages produced, consumed in order by a group, committed`);
}

main().catch((e) => { console.error('kafkajs FAILED:', e.message || e); process.exit(1); });
