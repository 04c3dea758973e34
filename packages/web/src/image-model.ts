/** The browser-safe parts of @stevedore/image the page uses (no node:fs). */
export type { ImageConfig, ImageManifest, Manifest } from '@stevedore/image/browser';
export { formatPlatform, isImageIndex, isImageManifest, parseConfig, parseManifest } from '@stevedore/image/browser';
