/** The browser-safe parts of @stevedore/image the page uses (no node:fs). */
export type { Descriptor, ImageConfig, ImageIndex, ImageManifest, Manifest } from '@stevedore/image/browser';
export {
  formatPlatform,
  isImageIndex,
  isImageManifest,
  isValidPathComponent,
  isValidTag,
  parseConfig,
  parseManifest,
  selectPlatform,
} from '@stevedore/image/browser';
