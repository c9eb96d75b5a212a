// Getting a unix socket path ready to listen on, with errors that say what is
// wrong: too long, parent not a directory, not a socket, or another live server.
import fs from 'node:fs';
import net from 'node:net';
import path from 'node:path';

/** sun_path is 108 bytes including the NUL. */
const MAX_SOCKET_PATH = 107;

export class SocketError extends Error {}

function isListening(p: string): Promise<boolean> {
  return new Promise((resolve) => {
    const c = net.connect(p);
    c.once('connect', () => {
      c.destroy();
      resolve(true);
    });
    c.once('error', () => resolve(false));
  });
}

export async function prepareSocket(p: string): Promise<void> {
  if (Buffer.byteLength(p) > MAX_SOCKET_PATH) {
    throw new SocketError(`socket path ${p} is longer than ${MAX_SOCKET_PATH} bytes`);
  }
  const dir = path.dirname(p);
  try {
    fs.mkdirSync(dir, { recursive: true, mode: 0o711 });
  } catch (e) {
    throw new SocketError(`socket directory ${dir}: ${(e as Error).message}`);
  }
  if (!fs.statSync(dir).isDirectory()) throw new SocketError(`socket directory ${dir} is not a directory`);
  let st: fs.Stats;
  try {
    st = fs.lstatSync(p);
  } catch {
    return; // nothing there
  }
  if (!st.isSocket()) throw new SocketError(`socket path ${p} exists and is not a socket`);
  if (await isListening(p)) throw new SocketError(`socket ${p} is in use by another process`);
  fs.unlinkSync(p); // stale, left by a process that died
}
