// The config lives with its packages in the tools/lint workspace (see tools/lint/package.json for why).
export { default } from './tools/lint/eslint.config.js';
