// A typed usage example of the whole API, checked with
// `npx tsc -p __test__/tsconfig.json` (never run). Every method and type of
// index.d.ts appears, and the @ts-expect-error lines must stay errors.
import {
  ErrorCode,
  Image,
  ImageHandle,
  LeaseKind,
  LocalBackend,
  Server,
  serve,
  __napiBindingTarget,
} from 'microsandbox';
import type {
  ImageConfigDetail,
  ImageDetail,
  ImageHandleJson,
  ImageLayerDetail,
  ImageLease,
  ImageLeaseJson,
  DiskUsage,
  ImagePruneReport,
  ImageUsage,
  VerifyReport,
  ProgressEvent,
  ImageDisk,
  ImageDiskLayer,
  PullProgress,
  PushProgress,
  PushReport,
} from 'microsandbox';

declare function log(...args: unknown[]): void;

function describeHandle(h: ImageHandle): string {
  const reference: string = h.reference;
  const size: number | null = h.sizeBytes;
  const digest: string | null = h.manifestDigest;
  const arch: string | null = h.architecture;
  const os: string | null = h.os;
  const layers: number = h.layerCount;
  const lastUsed: Date | null = h.lastUsedAt;
  const created: Date | null = h.createdAt;
  const json: ImageHandleJson = h.toJSON();
  return `${reference} ${size} ${digest} ${arch ?? '?'}/${os ?? '?'} ${layers} ${lastUsed?.toISOString()} ${created?.getTime()} ${json.reference}`;
}

function describeDetail(d: ImageDetail): void {
  const handle: ImageHandle = d.handle;
  const config: ImageConfigDetail | null = d.config;
  if (config === null) return;
  const configDigest: string = config.digest;
  const env: string[] = config.env;
  const cmd: string[] | null = config.cmd;
  const entrypoint: string[] | null = config.entrypoint;
  const workingDir: string | null = config.workingDir;
  const user: string | null = config.user;
  const labels: Record<string, unknown> | null = config.labels;
  const stopSignal: string | null = config.stopSignal;
  log(handle.sizeBytes, handle.lastUsedAt, configDigest, env, cmd, entrypoint, workingDir, user, labels, stopSignal);
  for (const layer of d.layers) {
    const l: ImageLayerDetail = layer;
    const diffId: string = l.diffId;
    const blobDigest: string = l.blobDigest;
    const mediaType: string | null = l.mediaType;
    const compressed: number | null = l.compressedSizeBytes;
    const erofs: number | null = l.erofsSizeBytes;
    const position: number = l.position;
    log(diffId, blobDigest, mediaType, compressed, erofs, position);
  }
}

function describeReport(r: ImagePruneReport): number {
  return (
    r.imageRefsRemoved +
    r.manifestsRemoved +
    r.layersRemoved +
    r.fsmetaRemoved +
    r.vmdkRemoved +
    r.configsRemoved +
    r.tmpFilesRemoved +
    r.expiredLeasesRemoved +
    (r.bytesReclaimed ?? 0)
  );
}

async function describeLease(lease: ImageLease): Promise<boolean> {
  const id: string = lease.id;
  const kind: LeaseKind = lease.kind;
  const reference: string | null = lease.reference;
  const digest: string | null = lease.manifestDigest;
  const created: Date = lease.createdAt;
  const expires: Date | null = lease.expiresAt;
  const json: ImageLeaseJson = lease.toJSON();
  log(id, kind === LeaseKind.Snapshot, reference, digest, created, expires, json.kind);
  return lease.release();
}

function codeOf(e: unknown): ErrorCode | undefined {
  return (e as { code?: ErrorCode }).code;
}

async function ambient(): Promise<void> {
  const loaded: ImageHandle[] = await Image.load('./target/fixtures/rich');
  await Image.load('./target/fixtures/multiarch', { platform: 'linux/arm64' });
  await Image.load('./archive.tar.gz', { reference: 'ghcr.io/me/app:1' });
  await Image.load('./archive.tar', {
    onProgress: (e: ProgressEvent) => {
      const phase: string = e.phase;
      const total: number | null = e.totalBytes;
      log(phase, e.digest, e.bytes, total);
    },
  });
  await Image.save('python:3.12', './python.tar');
  const pulled: ImageHandle = await Image.pull('alpine:3.20', { policy: 'always', platform: 'linux/arm64' });
  await Image.pullLocal(new LocalBackend(), 'localhost:5000/app:1', { insecure: true, onProgress: (e: ProgressEvent) => log(e.bytes) });
  log(pulled.reference);
  await Image.pull('python:3.12', { mirrors: { 'docker.io': ['https://mirror.internal'] }, dockerConfig: '/etc/docker' });
  // @ts-expect-error mirrors map hosts to arrays of URLs
  await Image.pull('python:3.12', { mirrors: { 'docker.io': 'https://mirror.internal' } });
  // @ts-expect-error: policies are 'missing', 'always' and 'never'
  await Image.pull('alpine', { policy: 'sometimes' });
  const pushed: PushReport = await Image.push('python:3.12', {
    to: 'registry.example.com/base/python:3.12',
    dockerConfig: '/etc/docker',
    chunkBytes: 32 << 20,
    onProgress: (e: PushProgress) => {
      if (e.kind === 'blobProgress') log(e.layerIndex, e.uploadedBytes, e.totalBytes);
      if (e.kind === 'blobComplete') log(e.digest, e.how);
    },
  });
  const uploaded: number = pushed.bytesUploaded + pushed.blobsUploaded + pushed.blobsMounted + pushed.blobsSkipped;
  log(pushed.reference, pushed.manifestDigest, uploaded);
  await Image.pushLocal(new LocalBackend(), '127.0.0.1:5000/app:1', { insecure: true });
  // @ts-expect-error: the destination is a reference string
  await Image.push('alpine', { to: 5000 });
  await Image.save(['python:3.12', 'alpine'], './both.tar', { format: 'docker' });
  await Image.saveLocal(new LocalBackend({ home: '/tmp/h' }), ['alpine'], './a.tar', { format: 'oci' });
  // @ts-expect-error: formats are 'oci' and 'docker'
  await Image.save('alpine', './a.zip', { format: 'zip' });
  loaded.forEach((h) => log(describeHandle(h)));
  const all: Array<ImageHandle> = await Image.list();
  const one: ImageHandle = await Image.get('rich');
  describeDetail(await Image.inspect('docker.io/library/rich:latest'));
  const lease: ImageLease = await Image.acquire('rich', { kind: 'snapshot', expiresInSeconds: 60 });
  const leases: ImageLease[] = await Image.leases();
  const released: boolean = await Image.release(lease.id);
  try {
    await Image.remove('rich');
  } catch (e) {
    if (codeOf(e) === ErrorCode.ImageInUse) await Image.remove('rich', { force: true });
  }
  const report: ImagePruneReport = await Image.prune();
  log(all.length, one.reference, leases.length, released, describeReport(report));
}

async function local(): Promise<void> {
  const backend = new LocalBackend({ home: '/tmp/msb-typed', lockTimeoutMs: 1000 });
  const home: string = backend.home;
  const defaults = new LocalBackend();
  log(home, defaults.home, __napiBindingTarget);
  const loaded = await Image.loadLocal(backend, './target/fixtures/pair');
  await Image.loadLocal(backend, './target/fixtures/multiarch', {});
  const handle = await Image.getLocal(backend, loaded[0].reference);
  const list = await Image.listLocal(backend);
  const detail = await Image.inspectLocal(backend, handle.manifestDigest ?? handle.reference);
  describeDetail(detail);
  const lease = await Image.acquireLocal(backend, 'base', { id: 'sandbox-1', kind: 'sandbox' });
  const leases = await Image.leasesLocal(backend);
  await describeLease(leases[0] ?? lease);
  const gone: boolean = await Image.releaseLocal(backend, 'sandbox-1');
  await Image.removeLocal(backend, 'app', { force: false });
  const report = await Image.pruneLocal(backend);
  log(list.map(describeHandle), gone, report.bytesReclaimed);
  const dry: ImagePruneReport = await Image.pruneLocal(backend, { dryRun: true, unusedFor: '7d', maxBytes: '20GB' });
  const taken: string[] = dry.removed.map((r) => `${r.reference} ${r.manifestDigest} ${r.bytes}`);
  await Image.prune({ dangling: true });
  await Image.prune({ unusedFor: 3600, maxBytes: 1e9 });
  const usage: DiskUsage = await Image.diskUsageLocal(backend);
  const per: ImageUsage[] = usage.images;
  const last: Date | null = per[0]?.lastUsedAt ?? null;
  log(taken, dry.overBudgetBytes, usage.totalBytes, usage.reclaimableBytes, per.map((i) => i.uniqueBytes + i.sharedBytes), last);
  const check: VerifyReport = await Image.verifyLocal(backend, { repair: false });
  log(check.clean, check.corruptBlobs.length, (await Image.verify()).danglingReferences);
  // @ts-expect-error maxBytes is a number or a string
  await Image.prune({ maxBytes: true });
  // @ts-expect-error diskUsage takes no options
  await Image.diskUsage({ verbose: true });

  const codes: ErrorCode[] = [
    ErrorCode.ImageNotFound, ErrorCode.ImageInUse, ErrorCode.InvalidReference, ErrorCode.InvalidArchive,
    ErrorCode.DigestMismatch, ErrorCode.CorruptCache, ErrorCode.PlatformNotFound, ErrorCode.Busy,
    ErrorCode.Unsupported, ErrorCode.Io, ErrorCode.Unauthorized, ErrorCode.RegistryError, ErrorCode.InvalidArgument,
  ];
  const kinds: LeaseKind[] = [LeaseKind.Sandbox, LeaseKind.Snapshot, LeaseKind.Ingest];
  log(codes, kinds);
}

async function wrong(backend: LocalBackend, handle: ImageHandle, lease: ImageLease): Promise<void> {
  // @ts-expect-error a reference is a string
  await Image.get(42);
  // @ts-expect-error the backend comes first
  await Image.getLocal('rich', backend);
  // @ts-expect-error no such property on a handle
  log(handle.size);
  // @ts-expect-error getters are read-only
  handle.reference = 'other:latest';
  // @ts-expect-error force is a boolean
  await Image.remove('rich', { force: 'yes' });
  // @ts-expect-error only 'sandbox' and 'snapshot' leases can be taken
  await Image.acquire('rich', { kind: 'bogus' });
  // @ts-expect-error expiresInSeconds is a number
  await Image.acquire('rich', { expiresInSeconds: '60' });
  // @ts-expect-error lastUsedAt may be null
  const t: Date = handle.lastUsedAt;
  // @ts-expect-error a lease's id is read-only
  lease.id = 'x';
  // @ts-expect-error list takes no arguments
  await Image.list(backend);
  // @ts-expect-error ImagePruneReport has no such field
  log((await Image.prune()).blobsRemoved);
  // @ts-expect-error release resolves a boolean
  const n: number = await Image.release('id');
  log(t, n);
}

async function disks(backend: LocalBackend): Promise<string> {
  const disk: ImageDisk = await Image.materialize('rich', {
    maxLayerBytes: 1 << 30,
    onProgress: (e: ProgressEvent) => log(e.phase),
    onPullProgress: (e: PullProgress) => {
      if (e.kind === 'layerMaterializeProgress') log(e.layerIndex, e.bytesRead, e.totalBytes);
      if (e.kind === 'layerMaterializeComplete') log(e.diffId, e.erofsSizeBytes);
      if (e.kind === 'stitchComplete') log(e.vmdkPath);
    },
  });
  const local: ImageDisk = await Image.materializeLocal(backend, 'rich');
  const first: ImageDiskLayer = local.layers[0];
  const sizes: number[] = disk.layers.map((l) => l.sizeBytes + l.position);
  const du: DiskUsage = await Image.diskUsage();
  const vm: number = du.vmBytes;
  const v: VerifyReport = await Image.verify();
  const bad: string[] = v.corruptArtifacts;
  const report: ImagePruneReport = await Image.prune({ vmOnly: true, maxBytes: '20GB' });
  const erofs: number | null = (await Image.inspect('rich')).layers[0].erofsSizeBytes;
  log(first.diffId, first.path, sizes, vm, bad, report.fsmetaRemoved, report.vmdkRemoved, erofs, v.artifactsChecked);
  // @ts-expect-error the disk's paths are strings
  const n: number = disk.vmdkPath;
  log(n);
  const remade: string[] = disk.remade;
  log(remade);
  return disk.fsmetaPath + disk.manifestDigest + disk.reference + disk.totalBytes;
}

async function served(): Promise<void> {
  await Image.save('rich', '/tmp/rich.tar', { format: 'minibox' });
  const server: Server = await serve({
    listen: '127.0.0.1:0',
    token: '0123456789abcdef',
    home: '/var/lib/msb',
    publicRegistry: true,
    maxConcurrentPulls: 2,
    log: true,
  });
  const address: string = server.address;
  await server.close();
  const local: Server = await serve();
  const viaFile: Server = await serve({ listen: 'unix:/run/msb.sock', tokenFile: '/etc/msb/token' });
  log(address, local.address, viaFile.address);
  // @ts-expect-error listen is a string
  await serve({ listen: 8080 });
  // @ts-expect-error the address is read-only
  server.address = 'x';
}

export { ambient, disks, local, wrong, served };
