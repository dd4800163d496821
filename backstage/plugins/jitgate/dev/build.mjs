// Bundles the dev app (dev/index.tsx) with esbuild into dev/build/: index.html, app.js, app.css. Takes a few seconds.
// JITGATE_DEV_PRINCIPAL (an Entra object id) is the development identity the app calls jitgate as; the browser may
// switch it in local storage (jitgate.devPrincipal).
import { build } from 'esbuild';
import { mkdir, writeFile } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const here = dirname(fileURLToPath(import.meta.url));
const out = join(here, 'build');
const config = {
  jitgate: {
    pages: {
      auth: 'development',
      devPrincipal: process.env.JITGATE_DEV_PRINCIPAL ?? 'dddddddd-0000-4000-8000-00000000000d',
      pollSeconds: Number(process.env.JITGATE_DEV_POLL_SECONDS ?? 2),
    },
  },
};

await mkdir(out, { recursive: true });
const started = Date.now();
await build({
  entryPoints: { app: join(here, 'index.tsx') },
  bundle: true,
  outdir: out,
  format: 'esm',
  splitting: true,
  minify: true,
  sourcemap: false,
  target: 'es2022',
  jsx: 'automatic',
  loader: { '.svg': 'dataurl', '.png': 'dataurl', '.woff': 'dataurl', '.woff2': 'dataurl' },
  define: {
    'process.env.NODE_ENV': '"production"',
    JITGATE_DEV_CONFIG: JSON.stringify(config),
  },
  logLevel: 'warning',
});
await writeFile(join(out, 'index.html'), `<!doctype html>
<html lang="en">
  <head>
    <meta charset="utf-8" />
    <meta name="viewport" content="width=device-width, initial-scale=1" />
    <title>jitgate dev app</title>
    <link rel="stylesheet" href="/app.css" />
  </head>
  <body>
    <div id="root"></div>
    <script type="module" src="/app.js"></script>
  </body>
</html>
`);
console.log(`dev app built in ${((Date.now() - started) / 1000).toFixed(1)} s: ${out}`);
