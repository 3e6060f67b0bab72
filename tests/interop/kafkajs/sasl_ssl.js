// KafkaJS over SASL_SSL with SCRAM: produce to a new topic as a SCRAM user over TLS (the CA given
// as the client's trust), then consume it back with a consumer group on the same connection kind.
// Usage: node sasl_ssl.js HOST:PORT CA_PEM USER PASSWORD MECHANISM (scram-sha-256|scram-sha-512)
const fs = require('fs');
const { Kafka, logLevel } = require('kafkajs');

async function main() {
  const [broker, caFile, username, password, mechanism] = process.argv.slice(2);
  const kafka = new Kafka({
    clientId: 'kafkajs-sasl-ssl',
    brokers: [broker],
    ssl: { ca: [fs.readFileSync(caFile, 'utf-8')] },
    sasl: { mechanism, username, password },
    logLevel: logLevel.NOTHING,
  });
  const topic = 'kjs-sasl-ssl-' + Date.now();
  const admin = kafka.admin();
  await admin.connect();
  await admin.createTopics({ topics: [{ topic, numPartitions: 1, replicationFactor: 1 }], waitForLeaders: true });

  const producer = kafka.producer();
  await producer.connect();
  const total = 300;
  for (let batch = 0; batch < total / 100; batch++) {
    const messages = [];
    for (let i = batch * 100; i < (batch + 1) * 100; i++) messages.push({ value: String(i) });
    await producer.send({ topic, acks: -1, messages });
  }
  await producer.disconnect();

  const consumer = kafka.consumer({ groupId: 'kjs-sasl-ssl-group-' + topic, sessionTimeout: 10000 });
  await consumer.connect();
  await consumer.subscribe({ topic, fromBeginning: true });
  const seen = [];
  await new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`timed out after ${seen.length} messages`)), 60000);
    consumer.run({
      eachMessage: async ({ message }) => {
        seen.push(Number(message.value.toString()));
        if (seen.length === total) { clearTimeout(timer); resolve(); }
      },
    }).catch(reject);
  });
  await consumer.disconnect();
  for (let i = 0; i < total; i++) if (seen[i] !== i) throw new Error(`message ${i} is ${seen[i]}`);
  await admin.disconnect();
  console.log(`kafkajs sasl_ssl ok: ${total} messages produced and consumed as ${username} with ${mechanism}`);
}

main().catch((e) => { console.error('kafkajs sasl_ssl FAILED:', e.message || e); process.exit(1); });
