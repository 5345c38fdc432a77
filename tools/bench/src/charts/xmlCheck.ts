/** Test helper: a strict well-formedness check for the SVG the chart writer emits. */
import { expect } from 'vitest';

/**
 * A strict well-formedness check for the XML subset the writer emits: every tag is
 * `<name attr="value" ...>` (or self-closing), attribute values have no raw `<`/`&`, text has
 * only the five predefined entities or numeric references, and tags nest and close in order.
 * Returns the element names in document order.
 */
export function checkXml(doc: string): string[] {
  const names: string[] = [];
  const stack: string[] = [];
  const tagRe = /^<(\/?)([A-Za-z][\w:-]*)((?:\s+[A-Za-z][\w:-]*="[^"<]*")*)\s*(\/?)>$/;
  const entityOk = (s: string): boolean => !/&(?!(?:amp|lt|gt|quot|apos|#\d+|#x[0-9a-fA-F]+);)/.test(s);
  const tokens = doc.match(/<[^>]*>|[^<]+/g) ?? [];
  expect(tokens.join('')).toBe(doc); // nothing fell between tokens (no stray '<')
  for (const t of tokens) {
    if (!t.startsWith('<')) {
      expect(entityOk(t), `bad entity in text ${JSON.stringify(t)}`).toBe(true);
      if (stack.length === 0) expect(t.trim()).toBe('');
      continue;
    }
    const m = tagRe.exec(t);
    expect(m, `malformed tag ${t}`).not.toBeNull();
    if (m === null) continue;
    const [, close, name = '', attrs = '', selfClose] = m;
    expect(entityOk(attrs), `bad entity in attributes of ${t}`).toBe(true);
    const attrNames = [...attrs.matchAll(/([A-Za-z][\w:-]*)="/g)].map((a) => a[1]);
    expect(new Set(attrNames).size, `duplicate attribute in ${t}`).toBe(attrNames.length);
    if (close === '/') {
      expect(stack.pop(), `unbalanced </${name}>`).toBe(name);
    } else {
      names.push(name);
      if (selfClose !== '/') stack.push(name);
    }
  }
  expect(stack).toEqual([]);
  return names;
}
