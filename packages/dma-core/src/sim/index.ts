export * from './clock.js';
export * from './scheduler.js';
export * from './rng.js';
export * from './faultInjection.js';
