// Lineage graph: hovering or focusing a node (in the graph or its row in the table)
// highlights its edges and neighbours. The page works without it: nodes are links.
"use strict";
document.addEventListener("DOMContentLoaded", () => {
  const svg = document.querySelector("svg.ln-graph");
  if (!svg) return;
  const wires = Array.from(svg.querySelectorAll(".ln-wire"));
  const nodes = new Map();
  for (const el of svg.querySelectorAll(".ln-node[data-node]")) nodes.set(el.dataset.node, el);
  const clear = () => {
    svg.classList.remove("ln-focus");
    for (const el of svg.querySelectorAll(".ln-hot, .ln-near")) el.classList.remove("ln-hot", "ln-near");
    for (const row of document.querySelectorAll("tr.ln-hot")) row.classList.remove("ln-hot");
  };
  const show = (id) => {
    clear();
    const node = nodes.get(id);
    if (!node) return;
    svg.classList.add("ln-focus");
    node.classList.add("ln-hot");
    for (const wire of wires) {
      const other = wire.dataset.src === id ? wire.dataset.dst : wire.dataset.dst === id ? wire.dataset.src : null;
      if (other === null) continue;
      wire.classList.add("ln-hot");
      const near = nodes.get(other);
      if (near) near.classList.add("ln-near");
    }
    const row = document.querySelector(`tr[data-node="${id}"]`);
    if (row) row.classList.add("ln-hot");
  };
  const targets = [...nodes.values(), ...document.querySelectorAll("tr[data-node]")];
  for (const el of targets) {
    el.addEventListener("mouseenter", () => show(el.dataset.node));
    el.addEventListener("focusin", () => show(el.dataset.node));
    el.addEventListener("mouseleave", clear);
    el.addEventListener("focusout", clear);
  }
});
