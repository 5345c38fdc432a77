import { h } from '../dom.js';
import type { RunModel } from '../model.js';

/** What every view gets to draw: the run, and the domain picked in the domain selector. */
export interface ViewContext {
  readonly model: RunModel;
  readonly domain: string | undefined;
  /** Mapping path of the run ('iova' two-step or 'legacy'), when the stack has one. */
  readonly mapping: string | undefined;
}

export function stat(label: string, value: string, testid?: string, title?: string): HTMLElement {
  return h('div', { class: 'stat', 'data-testid': testid, title }, h('span', { class: 'stat-label' }, label), h('span', { class: 'stat-value' }, value));
}

export function empty(text: string): HTMLElement {
  return h('p', { class: 'empty' }, text);
}

/** Width available to a view body (panels are flexible). */
export function widthOf(el: Element, fallback = 560): number {
  const w = el.getBoundingClientRect().width;
  return Math.max(240, Math.floor(w > 0 ? w : fallback));
}
