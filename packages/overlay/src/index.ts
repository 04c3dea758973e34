/**
 * @stevedore/overlay: an image store laid out as Docker's overlay2 driver (`overlay2/`,
 * `image/overlay2/{imagedb,layerdb,repositories.json}`) plus a content store of the original
 * blobs; loading from docker-archives, OCI layouts and registries; kernel overlay mounts built
 * from short links; and a userspace merged view over the same diff dirs.
 */

export {
  type ContainerInfo,
  type ContainerRecord,
  createContainer,
  findContainer,
  listContainers,
  removeContainer,
} from './containers.js';
export {
  DEFAULT_DOCKER_ROOT,
  type DockerImage,
  type DockerImageSummary,
  type DockerImportOptions,
  type DockerImportResult,
  type DockerLayer,
  DockerRoot,
  importDockerImage,
  mountDockerImage,
  unpackDockerImage,
} from './docker-root.js';
export { directorySize, shortLinkId } from './fsutil.js';
export { type CommitOptions, commit, fsck, prune, rmi, storedImage, verifyLayers } from './lifecycle.js';
export { pidAlive, withLock } from './lock.js';
export { compareDiff, DIFF_MANIFEST_FILE, type DiffEntry, type DiffManifest, walkDiff } from './manifest.js';
export {
  type ActiveMount,
  listMounts,
  type MountInfo,
  type MountOptions,
  mount,
  overlaySupported,
  runMount,
  storeMounts,
  umount,
} from './mount.js';
export {
  defaultRoot,
  type LoadOptions,
  type LoadResult,
  Store,
  type StoredImage,
  type StoredLayer,
  type StoreOptions,
} from './store.js';
export {
  crc64Iso,
  readTarSplit,
  reassembleTarSplit,
  TAR_SPLIT_FILE,
  type TarSplitEntry,
  verifyTarSplit,
} from './tar-split.js';
export {
  exportImage,
  MergedView,
  overlayXattrs,
  toLayerEntry,
  unpack,
  type WalkedEntry,
  walkDiffDir,
} from './view.js';
