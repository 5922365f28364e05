import { defineConfig } from "vite";

// The build lands where controller/build.rs embeds it from; asset names are content-hashed.
export default defineConfig({
  build: {
    outDir: "dist/ui",
    emptyOutDir: true,
    // One small bundle: no module preload polyfill (it would need an inline script).
    modulePreload: { polyfill: false },
    chunkSizeWarningLimit: 1024,
  },
});
