// One sender thread of SenderThreads (senders.ts): opens its own send-only socket on the path WIDESCAN_IO
// selects, says which (or why it cannot), then sends what it is handed, one request at a time, straight from
// the worker's shared memory. The raw-socket fallback cannot run here (its Nan addon loads in one thread of a
// process only): sender threads need the native addon.

import { parentPort, workerData } from 'node:worker_threads';
import { nativeAddonStatus, openIcmp6Transport, type Icmp6Transport } from '../lib/icmp6native.js';
import type { SendReply, SendRequest, SendThreadData, SendThreadReady } from './senders.js';

const data = workerData as SendThreadData;
const port = parentPort!;
let io: Icmp6Transport;
try {
  const addon = nativeAddonStatus();
  if (!addon.available) throw new Error(`sender threads need the native addon: ${addon.reason}`);
  if (process.env.WIDESCAN_IO === 'raw-socket') throw new Error('sender threads need the native addon, and WIDESCAN_IO=raw-socket forbids it; unset one of them');
  io = openIcmp6Transport({ receiveTypes: [], sendBufferBytes: data.sendBufferBytes });
} catch (err) {
  port.postMessage({ type: 'error', message: (err as Error).message } satisfies SendThreadReady);
  process.exit(1);
}
port.postMessage({ type: 'ready', path: io.path } satisfies SendThreadReady);

let hopLimit: number | undefined;
port.on('message', (r: SendRequest) => {
  void (async () => {
    try {
      if (r.hopLimit !== undefined && r.hopLimit !== hopLimit) {
        io.setHopLimit(r.hopLimit);
        hopLimit = r.hopLimit;
      }
      const packets = Buffer.from(r.packets, r.packetsOffset, r.packetsLength);
      const addresses = new Uint8Array(r.addresses, r.addressesOffset, r.addressesLength);
      const { sent, errors } = await io.send(packets, r.packetBytes, addresses, r.from, r.to);
      port.postMessage({ id: r.id, sent, errors } satisfies SendReply);
    } catch (err) {
      port.postMessage({ id: r.id, error: (err as Error).message } satisfies SendReply);
    }
  })();
});
