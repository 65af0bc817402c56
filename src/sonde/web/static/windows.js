// The window presets every page offers (the API's steps follow from the window).

export const WINDOWS = [
  {id: "15m", label: "15 min", ms: 15 * 60e3},
  {id: "1h", label: "1 h", ms: 3600e3},
  {id: "6h", label: "6 h", ms: 6 * 3600e3},
  {id: "24h", label: "24 h", ms: 24 * 3600e3},
  {id: "7d", label: "7 d", ms: 7 * 24 * 3600e3},
];
