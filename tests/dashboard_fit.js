// What tests/test_dashboard_fit.py checks on a page, in the page: a list of problems, each a sentence
// naming the element (empty when the page fits its window).
//
// - the page scrolls sideways (the document is wider than the window);
// - an element's content is wider than its box (scrollWidth > clientWidth): a table scrolling in its
//   panel, text cut off or spilling over its neighbour. Text shortened with an ellipsis is allowed when
//   the element or an ancestor carries the full text in `title`;
// - a money figure (.money) spans two lines, an email (.email) breaks other than before its "@" or a
//   "." (or after a hyphen); a dollar amount outside a .money element or an email outside an .email
//   one (so none escapes these checks);
// - a filter bar (form.filters) whose labels or controls do not line up along a row, or whose button
//   sits alone on a row of its own.
() => {
  const problems = [];
  const name = (el) => {
    let text = el.tagName.toLowerCase();
    if (el.id) text += `#${el.id}`;
    if (el.classList.length) text += "." + [...el.classList].join(".");
    const table = el.closest("[data-table]");
    if (table) text += ` in table ${table.dataset.table}`;
    const shown = (el.innerText || el.textContent || "").trim().replace(/\s+/g, " ");
    return `${text} "${shown.slice(0, 60)}${shown.length > 60 ? "…" : ""}"`;
  };
  const rendered = (el) => el.getClientRects().length > 0 && getComputedStyle(el).visibility !== "hidden";
  const lineHeight = (el) => {
    const style = getComputedStyle(el);
    const value = parseFloat(style.lineHeight);
    return Number.isNaN(value) ? parseFloat(style.fontSize) * 1.2 : value;
  };
  const oneLine = (el) => {
    const rects = [...el.getClientRects()].filter((r) => r.width > 0);
    const tops = new Set(rects.map((r) => Math.round(r.top)));
    const style = getComputedStyle(el);
    const frame = ["paddingTop", "paddingBottom", "borderTopWidth", "borderBottomWidth"];
    const inner = el.getBoundingClientRect().height - frame.reduce((sum, side) => sum + parseFloat(style[side]), 0);
    return tops.size <= 1 && inner < 1.6 * lineHeight(el);
  };

  const root = document.documentElement;
  if (root.scrollWidth > window.innerWidth) {
    problems.push(`the page scrolls sideways: ${root.scrollWidth} px wide in a ${window.innerWidth} px window`);
  }

  const skip = "svg, svg *, input, select, textarea, option, script, style, head, head *";
  const wide = [];
  for (const el of document.body.querySelectorAll("*")) {
    if (el.matches(skip) || !rendered(el) || el.clientWidth === 0) continue;
    if (el.scrollWidth <= el.clientWidth + 1) continue;
    const style = getComputedStyle(el);
    const shortened = style.textOverflow === "ellipsis" && style.overflowX !== "visible";
    const titled = el.closest("[title]") !== null && el.closest("[title]").title.trim() !== "";
    if (shortened && titled) continue;
    wide.push(el);
  }
  // The innermost element is the one to fix: its ancestors only carry its overflow.
  for (const el of wide) {
    if (wide.some((other) => other !== el && el.contains(other))) continue;
    const style = getComputedStyle(el);
    const how = style.overflowX === "visible" ? "spills out of" : style.overflowX === "auto" || style.overflowX === "scroll" ? "scrolls in" : "is cut off by";
    problems.push(`${name(el)}: its content (${el.scrollWidth} px) ${how} its ${el.clientWidth} px box`);
  }

  for (const el of document.querySelectorAll(".money")) {
    if (rendered(el) && !oneLine(el)) problems.push(`money figure ${name(el)} spans two lines`);
  }
  for (const el of document.querySelectorAll(".email")) {
    if (!rendered(el) || oneLine(el)) continue;
    // Where each character sits: a new line may start only at the "@" or a ".", or after a hyphen.
    const walker = document.createTreeWalker(el, NodeFilter.SHOW_TEXT);
    const range = document.createRange();
    let top = null;
    let previous = "";
    for (let node = walker.nextNode(); node; node = walker.nextNode()) {
      for (let i = 0; i < node.length; i++) {
        range.setStart(node, i);
        range.setEnd(node, i + 1);
        const rect = range.getBoundingClientRect();
        if (rect.width === 0) continue;
        if (top !== null && rect.top > top + 2 && !"@.".includes(node.data[i]) && previous !== "-") {
          problems.push(`email ${name(el)} breaks mid-word, before "${node.data.slice(i, i + 8)}"`);
        }
        top = rect.top;
        previous = node.data[i];
      }
    }
  }
  const texts = document.createTreeWalker(document.body, NodeFilter.SHOW_TEXT);
  for (let node = texts.nextNode(); node; node = texts.nextNode()) {
    const parent = node.parentElement;
    if (!/\$\s?[0-9]/.test(node.data) || parent.closest(".money, svg, script, option") || !rendered(parent)) continue;
    problems.push(`a dollar amount outside a .money figure: ${name(parent)}`);
  }
  const mails = document.createTreeWalker(document.body, NodeFilter.SHOW_TEXT);
  for (let node = mails.nextNode(); node; node = mails.nextNode()) {
    const parent = node.parentElement;
    if (!/[\w.+-]+@[\w-]+\.\w/.test(node.data) || parent.closest(".email, script, option") || !rendered(parent)) continue;
    problems.push(`an email outside an .email element: ${name(parent)}`);
  }

  for (const form of document.querySelectorAll("form.filters")) {
    if (!rendered(form)) continue;
    const rows = new Map();
    for (const item of form.children) {
      if (!rendered(item) || item.type === "hidden") continue;
      const bottom = Math.round(item.getBoundingClientRect().bottom);
      const row = [...rows.keys()].find((b) => Math.abs(b - bottom) <= 2) ?? bottom;
      rows.set(row, [...(rows.get(row) || []), item]);
    }
    for (const items of rows.values()) {
      const fields = items.filter((item) => item.matches(".field"));
      const controls = fields.map((f) => f.querySelector("input, select")).filter(Boolean);
      const labels = fields.map((f) => f.querySelector("label"));
      const labelTops = new Set(labels.map((l) => Math.round(l.getBoundingClientRect().top)));
      if (labelTops.size > 1) problems.push(`filter labels out of line in ${name(form)}: tops ${[...labelTops]}`);
      const bottoms = new Set(controls.map((c) => Math.round(c.getBoundingClientRect().bottom)));
      if (bottoms.size > 1) problems.push(`filter fields out of line in ${name(form)}: bottoms ${[...bottoms]}`);
      const buttons = items.filter((item) => item.matches("button, .btn"));
      if (buttons.length && !fields.length) problems.push(`${name(buttons[0])} sits alone on a row of ${name(form)}`);
      for (const button of buttons) {
        if (!oneLine(button)) problems.push(`${name(button)} wraps`);
      }
    }
  }
  return problems;
}
