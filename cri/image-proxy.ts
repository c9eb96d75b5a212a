// An optional CRI ImageService in front of containerd's ([cri]
// image_proxy_address; kubelet's --image-service-endpoint names it), the way
// nydus-snapshotter's CRI keychain gets at imagePullSecrets: every call goes
// on to containerd as raw bytes, untouched; from a PullImage, the image and
// its credentials are read first and kept per repository
// (registry/cri-credentials.ts), so the worker's lazy reads of a private
// image are authorized like the pull was. Credentials are never logged.
import fs from 'node:fs';
import * as grpc from '@grpc/grpc-js';
import * as protoLoader from '@grpc/proto-loader';
import type { Logger } from 'pino';
import { protoRoot } from '../proto/load';
import { prepareSocket } from '../snapshotter/socket';
import { CriAuth, credentialsOf, saveCriCredentials } from '../registry/cri-credentials';
import { parseImageRef } from '../registry/manifest';

const SERVICE = 'runtime.v1.ImageService';
const METHODS = ['ListImages', 'ImageStatus', 'PullImage', 'RemoveImage', 'ImageFsInfo'] as const;
const raw = (b: Buffer) => b;

type PullRequest = { image?: { image?: string }; auth?: CriAuth };

export interface CriImageProxy {
  server: grpc.Server;
  close(): Promise<void>;
}

export async function serveCriImageProxy(address: string, upstream: string, credentialsDir: string, log: Logger): Promise<CriImageProxy> {
  const pkg = protoLoader.loadSync('k8s/cri/v1/pull.proto', { includeDirs: [protoRoot()], keepCase: true, defaults: false });
  const decodePull = (pkg[SERVICE] as protoLoader.ServiceDefinition).PullImage.requestDeserialize as (b: Buffer) => PullRequest;
  const upstreamClient = new grpc.Client(`unix://${upstream}`, grpc.credentials.createInsecure());
  const definition: Record<string, grpc.MethodDefinition<Buffer, Buffer>> = {};
  const handlers: grpc.UntypedServiceImplementation = {};
  for (const m of METHODS) {
    const path = `/${SERVICE}/${m}`;
    definition[m] = { path, requestStream: false, responseStream: false, requestSerialize: raw, requestDeserialize: raw, responseSerialize: raw, responseDeserialize: raw, originalName: m };
    handlers[m] = (call: grpc.ServerUnaryCall<Buffer, Buffer>, cb: grpc.sendUnaryData<Buffer>) => {
      if (m === 'PullImage') keepCredentials(call.request);
      const deadline = call.getDeadline();
      upstreamClient.makeUnaryRequest(path, raw, raw, call.request, call.metadata, deadline === Infinity ? {} : { deadline }, (err, res) => {
        if (err) cb({ code: err.code, details: err.details, metadata: err.metadata });
        else cb(null, res);
      });
    };
  }

  function keepCredentials(req: Buffer): void {
    let image = '';
    try {
      const r = decodePull(req);
      image = r.image?.image ?? '';
      const creds = credentialsOf(r.auth);
      if (!image || !creds) return; // anonymous: nothing to keep (a kept one from an earlier pull stays)
      const ref = parseImageRef(image);
      saveCriCredentials(credentialsDir, ref.host, ref.repo, creds);
      log.info({ image: `${ref.host}/${ref.repo}` }, 'kept the credentials of a CRI pull for lazy reads of its image');
    } catch (err) {
      log.warn({ image: image.slice(0, 200), err: (err as Error).message.slice(0, 200) }, "cannot keep a CRI pull's credentials; its lazy reads use the node's own");
    }
  }

  await prepareSocket(address);
  const server = new grpc.Server({ 'grpc.max_receive_message_length': 16 << 20 });
  server.addService(definition as grpc.ServiceDefinition, handlers);
  const old = process.umask(0o177);
  try {
    await new Promise<number>((resolve, reject) =>
      server.bindAsync(`unix://${address}`, grpc.ServerCredentials.createInsecure(), (err, port) => (err ? reject(err) : resolve(port))));
  } finally {
    process.umask(old);
  }
  fs.chmodSync(address, 0o600);
  return {
    server,
    close: async () => {
      await new Promise<void>((r) => server.tryShutdown(() => r()));
      upstreamClient.close();
      fs.rmSync(address, { force: true });
    },
  };
}
