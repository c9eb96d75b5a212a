// Serves the Snapshots service on a unix socket that only root can dial.
import fs from 'node:fs';
import * as grpc from '@grpc/grpc-js';
import type { Logger } from 'pino';
import { snapshotsService } from '../proto/load';
import { snapshotsHandlers, type CallObserver } from './service';
import { Snapshotter } from './snapshotter';
import { prepareSocket } from './socket';

/**
 * The largest request taken. The largest valid one is a snapshot's labels
 * (1 MiB in all) with its key and parent (4 KiB each); decoding a 12 MB
 * request held every other client up for 150 ms. A larger one is refused
 * (RESOURCE_EXHAUSTED) from its length prefix, before it is decoded.
 */
export const MAX_REQUEST_BYTES = 2 << 20;

export interface ExtraService {
  definition: grpc.ServiceDefinition;
  handlers: grpc.UntypedServiceImplementation;
}

export async function serve(sn: Snapshotter, address: string, log: Logger, extra: ExtraService[] = [], observe?: CallObserver): Promise<grpc.Server> {
  await prepareSocket(address);
  const server = new grpc.Server({
    'grpc.max_receive_message_length': MAX_REQUEST_BYTES,
    'grpc.max_send_message_length': 16 << 20,
  });
  server.addService(snapshotsService().service, snapshotsHandlers(sn, log, observe));
  for (const e of extra) server.addService(e.definition, e.handlers);
  // The umask makes the socket 0600 from its creation, with no window in which others can connect.
  const old = process.umask(0o177);
  try {
    await new Promise<number>((resolve, reject) =>
      server.bindAsync(`unix://${address}`, grpc.ServerCredentials.createInsecure(), (err, port) =>
        err ? reject(err) : resolve(port),
      ),
    );
  } finally {
    process.umask(old);
  }
  fs.chmodSync(address, 0o600);
  return server;
}

export function shutdown(server: grpc.Server, timeoutMs = 5000): Promise<void> {
  return new Promise((resolve) => {
    const t = setTimeout(() => {
      server.forceShutdown();
      resolve();
    }, timeoutMs);
    server.tryShutdown(() => {
      clearTimeout(t);
      resolve();
    });
  });
}
