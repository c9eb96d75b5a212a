// The blobs an image's mount opens: the device tags in its bootstrap's
// device table. Read from the bootstrap's head only, since a plain EROFS
// image can be hundreds of MiB.
import fs from 'node:fs';
import { Bytes } from '../image/bytes';
import { deviceTableEnd, deviceTags } from '../image/rafs/bootstrap';

export function readDeviceTags(file: string): string[] {
  const fd = fs.openSync(file, 'r');
  try {
    const read = (len: number) => {
      const buf = Buffer.alloc(len);
      return new Bytes(buf.subarray(0, fs.readSync(fd, buf, 0, len, 0)), `bootstrap ${file}`);
    };
    const head = read(64 << 10);
    const end = deviceTableEnd(head);
    return deviceTags(end <= head.length ? head : read(end));
  } finally {
    fs.closeSync(fd);
  }
}
