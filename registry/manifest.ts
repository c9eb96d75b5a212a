// Image references, manifest media types (OCI and Docker) and platform
// selection in indexes / manifest lists.

export const MediaType = {
  OciManifest: 'application/vnd.oci.image.manifest.v1+json',
  OciIndex: 'application/vnd.oci.image.index.v1+json',
  DockerManifest: 'application/vnd.docker.distribution.manifest.v2+json',
  DockerList: 'application/vnd.docker.distribution.manifest.list.v2+json',
} as const;

export const MANIFEST_TYPES: string[] = [MediaType.OciManifest, MediaType.DockerManifest];
export const INDEX_TYPES: string[] = [MediaType.OciIndex, MediaType.DockerList];
export const MANIFEST_ACCEPT = [...MANIFEST_TYPES, ...INDEX_TYPES].join(', ');

export interface Platform {
  os: string;
  architecture: string;
  variant?: string;
  'os.version'?: string;
  'os.features'?: string[];
}

export interface Descriptor {
  mediaType: string;
  digest: string;
  size: number;
  annotations?: Record<string, string>;
  platform?: Platform;
  urls?: string[];
}

export interface ImageManifest {
  schemaVersion: number;
  mediaType?: string;
  config: Descriptor;
  layers: Descriptor[];
  annotations?: Record<string, string>;
}

export interface ImageIndex {
  schemaVersion: number;
  mediaType?: string;
  manifests: Descriptor[];
  annotations?: Record<string, string>;
}

export interface ImageRef {
  /** registry host[:port]; "docker.io" for Docker Hub */
  host: string;
  repo: string;
  /** a tag, or undefined when only a digest is given */
  tag?: string;
  digest?: string;
}

const DIGEST = /^[a-z0-9]+(?:[.+_-][a-z0-9]+)*:[a-zA-Z0-9=_-]+$/;
const REPO = /^[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*(?:\/[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*)*$/;

/**
 * Parses "host[:port]/repo[:tag][@digest]" the way containerd normalises
 * names: no host → docker.io, and docker.io single names get "library/".
 */
export function parseImageRef(s: string): ImageRef {
  let rest = s.replace(/^docker:\/\//, '');
  let digest: string | undefined;
  const at = rest.indexOf('@');
  if (at >= 0) {
    digest = rest.slice(at + 1);
    rest = rest.slice(0, at);
    if (!DIGEST.test(digest)) throw new Error(`"${s}": "${digest}" is not a digest`);
  }
  let tag: string | undefined;
  const colon = rest.lastIndexOf(':');
  if (colon > rest.lastIndexOf('/')) {
    tag = rest.slice(colon + 1);
    rest = rest.slice(0, colon);
    if (!/^[\w][\w.-]{0,127}$/.test(tag)) throw new Error(`"${s}": "${tag}" is not a tag`);
  }
  let host = 'docker.io';
  const slash = rest.indexOf('/');
  const first = slash >= 0 ? rest.slice(0, slash) : '';
  if (slash >= 0 && (first.includes('.') || first.includes(':') || first === 'localhost')) {
    host = first;
    rest = rest.slice(slash + 1);
  }
  if (host === 'docker.io' && !rest.includes('/')) rest = `library/${rest}`;
  if (!REPO.test(rest)) throw new Error(`"${s}": "${rest}" is not a repository name`);
  if (!tag && !digest) tag = 'latest';
  return { host, repo: rest, tag, digest };
}

export function isIndexType(mediaType: string | undefined): boolean {
  return mediaType !== undefined && INDEX_TYPES.includes(mediaType);
}

export function isManifestType(mediaType: string | undefined): boolean {
  return mediaType !== undefined && MANIFEST_TYPES.includes(mediaType);
}

/** "linux/amd64", "linux/arm64/v8" → Platform */
export function parsePlatform(s: string): Platform {
  const [os, architecture, variant] = s.split('/');
  if (!os || !architecture) throw new Error(`platform "${s}" is not os/arch[/variant]`);
  return variant ? { os, architecture, variant } : { os, architecture };
}

export const DEFAULT_PLATFORM: Platform = { os: 'linux', architecture: 'amd64' };

/** arm64's variant defaults to v8 and arm's to v7, as in containerd's platforms package. */
function normVariant(arch: string, variant: string | undefined): string | undefined {
  if (variant) return variant;
  if (arch === 'arm64') return 'v8';
  if (arch === 'arm') return 'v7';
  return undefined;
}

export function platformMatches(p: Platform | undefined, want: Platform): boolean {
  if (!p) return false;
  return p.os === want.os && p.architecture === want.architecture &&
    normVariant(p.architecture, p.variant) === normVariant(want.architecture, want.variant);
}

/**
 * The manifest for `want` in an index. Among several matches (e.g. a nydus
 * manifest next to the OCI one) the first whose os.features include
 * `preferFeature` wins, else the first match.
 */
export function selectPlatform(index: ImageIndex, want: Platform = DEFAULT_PLATFORM, preferFeature?: string): Descriptor | undefined {
  const matches = index.manifests.filter((d) => platformMatches(d.platform, want));
  if (preferFeature) {
    const pref = matches.find((d) => d.platform?.['os.features']?.includes(preferFeature));
    if (pref) return pref;
  }
  return matches[0];
}

export function describePlatform(p: Platform): string {
  return `${p.os}/${p.architecture}${p.variant ? `/${p.variant}` : ''}`;
}
