// Validate an AsyncAPI document with @asyncapi/parser and its default rules.
// Usage: node validate_asyncapi.mjs FILE
// Prints {"diagnostics": [...], "channels": [...addresses], "valid": bool}; exit 1 on errors.
import { readFile } from "node:fs/promises";
import { Parser, DiagnosticSeverity } from "@asyncapi/parser";

const text = await readFile(process.argv[2], "utf8");
const { document, diagnostics } = await new Parser().parse(text, { source: process.argv[2] });
const errors = diagnostics.filter((d) => d.severity === DiagnosticSeverity.Error);
console.log(JSON.stringify({
  valid: document !== undefined && errors.length === 0,
  diagnostics: diagnostics.map((d) => ({
    severity: d.severity, code: d.code, path: d.path, message: d.message,
  })),
  channels: document ? document.channels().all().map((c) => c.address()) : [],
  operations: document ? document.operations().all().map((o) => o.id()) : [],
}));
process.exit(document !== undefined && errors.length === 0 ? 0 : 1);
