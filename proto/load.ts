// Loads the .proto files shipped in proto/ (they sit beside this file's
// source; the compiled file lives two levels down in dist/).
import path from 'node:path';
import fs from 'node:fs';
import * as grpc from '@grpc/grpc-js';
import * as protoLoader from '@grpc/proto-loader';

export function protoRoot(): string {
  for (const dir of [__dirname, path.resolve(__dirname, '../../proto')]) {
    if (fs.existsSync(path.join(dir, 'containerd/types/mount.proto'))) return dir;
  }
  throw new Error(`cannot find the .proto files near ${__dirname}`);
}

export function loadProto(file: string): grpc.GrpcObject {
  const def = protoLoader.loadSync(file, {
    includeDirs: [protoRoot()],
    keepCase: true,
    longs: String,
    enums: Number,
    defaults: true,
    oneofs: true,
  });
  return grpc.loadPackageDefinition(def);
}

/** containerd.services.snapshots.v1.Snapshots, for servers and test clients. */
export function snapshotsService(): grpc.ServiceClientConstructor {
  const pkg = loadProto('containerd/services/snapshots/v1/snapshots.proto') as any;
  return pkg.containerd.services.snapshots.v1.Snapshots as grpc.ServiceClientConstructor;
}

/** lazysnap.v1.Admin: mount, umount, status for the CLI. */
export function adminService(): grpc.ServiceClientConstructor {
  const pkg = loadProto('lazysnap/v1/admin.proto') as any;
  return pkg.lazysnap.v1.Admin as grpc.ServiceClientConstructor;
}
