// A1111 habits of the prompt boxes and the Generate button:
// - Ctrl+Up / Ctrl+Down (Cmd on a Mac) change the weight of the selected words, or of the word at the cursor:
//   `word` -> `(word:1.1)`, steps of opts.keyedit_precision_attention; `<lora:name:0.9>` in steps of
//   opts.keyedit_precision_extra; a weight of 1 removes the parentheses.
// - right-click on Generate: "Generate forever" (Generate again each time a job ends) and "Cancel generate forever".

// ---------------------------------------------------------------------------------------------------------------------
// Prompt weights
// ---------------------------------------------------------------------------------------------------------------------
const HABITS_DEFAULT_DELIMITERS = ".,\\/!?%^*;:{}=`~()[]<>\"'|";

function habitsOption(name, fallback) {
    const value = window.opts && window.opts[name];
    return value === undefined || value === null || value === "" ? fallback : value;
}

/** The innermost `open`...`close` pair around the selection [start, end): [index of open, index of close] or null. */
function habitsEnclosing(text, start, end, open, close) {
    let i = text[start] === open ? start : start - 1;
    let depth = 0;
    for (; i >= 0; i--) {
        if (text[i] === close && i < start) {
            depth++;
        } else if (text[i] === open) {
            if (depth === 0) {
                break;
            }
            depth--;
        }
    }
    if (i < 0) {
        return null;
    }
    depth = 0;
    for (let j = i + 1; j < text.length; j++) {
        if (text[j] === open) {
            depth++;
        } else if (text[j] === close) {
            if (depth === 0) {
                return j >= end - 1 ? [i, j] : null;
            }
            depth--;
        }
    }
    return null;
}

/** A weight as written: rounded to the step's precision, no trailing zeros (1 not 1.0). */
function habitsFormatWeight(value) {
    return String(Number(value.toFixed(4)));
}

/**
 * The prompt text after one Ctrl+Up (`up`) or Ctrl+Down on the selection [start, end):
 * {text, start, end} (the new selection), or null when there is nothing to weight.
 */
function habitsEditWeight(text, start, end, up) {
    const sign = up ? 1 : -1;
    // <lora:name:0.9>, <hypernet:name:1>: the last number, in the extra-networks step
    const tag = habitsEnclosing(text, start, end, "<", ">");
    if (tag) {
        const inner = text.slice(tag[0] + 1, tag[1]);
        const parts = inner.split(":");
        if (parts.length >= 2) {
            const step = Number(habitsOption("keyedit_precision_extra", 0.05));
            const last = parts.length >= 3 && /^\s*-?\d*\.?\d+\s*$/.test(parts[parts.length - 1]);
            const weight = last ? Number(parts[parts.length - 1]) : 1;
            const head = last ? parts.slice(0, -1) : parts;
            const replaced = `<${head.join(":")}:${habitsFormatWeight(weight + sign * step)}>`;
            return {text: text.slice(0, tag[0]) + replaced + text.slice(tag[1] + 1),
                    start: tag[0] + 1, end: tag[0] + replaced.length - 1};
        }
    }
    const step = Number(habitsOption("keyedit_precision_attention", 0.1));
    // (words:1.2): change the number; at 1 the parentheses go
    const paren = habitsEnclosing(text, start, end, "(", ")");
    if (paren) {
        const inner = text.slice(paren[0] + 1, paren[1]);
        const match = /^([\s\S]*):\s*(-?\d*\.?\d+)\s*$/.exec(inner);
        if (match) {
            const weight = habitsFormatWeight(Number(match[2]) + sign * step);
            const words = match[1];
            if (weight === "1") {
                return {text: text.slice(0, paren[0]) + words + text.slice(paren[1] + 1),
                        start: paren[0], end: paren[0] + words.length};
            }
            const replaced = `(${words}:${weight})`;
            return {text: text.slice(0, paren[0]) + replaced + text.slice(paren[1] + 1),
                    start: paren[0] + 1, end: paren[0] + 1 + words.length};
        }
    }
    // plain words: the selection, or the word at the cursor
    if (start === end) {
        const delimiters = String(habitsOption("keyedit_delimiters", HABITS_DEFAULT_DELIMITERS));
        const isWordChar = (ch) => ch !== undefined && !/\s/.test(ch) && !delimiters.includes(ch);
        while (start > 0 && isWordChar(text[start - 1])) {
            start--;
        }
        while (end < text.length && isWordChar(text[end])) {
            end++;
        }
    }
    while (start < end && /\s/.test(text[start])) {
        start++;
    }
    while (end > start && /\s/.test(text[end - 1])) {
        end--;
    }
    if (start === end) {
        return null;
    }
    const words = text.slice(start, end);
    const replaced = `(${words}:${habitsFormatWeight(1 + sign * step)})`;
    return {text: text.slice(0, start) + replaced + text.slice(end), start: start + 1, end: start + 1 + words.length};
}

/** Whether `el` is a prompt text box (txt2img/img2img prompt and negative prompt, the hires prompts). */
function habitsIsPromptBox(el) {
    if (!el || el.tagName !== "TEXTAREA") {
        return false;
    }
    const box = el.closest("[id]");
    return Boolean(box && /(^|_)(neg_)?prompt$/.test(box.id));
}

document.addEventListener("keydown", (e) => {
    if (!(e.key === "ArrowUp" || e.key === "ArrowDown") || !(e.ctrlKey || e.metaKey) || e.altKey || e.shiftKey) {
        return;
    }
    const area = e.target;
    if (!habitsIsPromptBox(area)) {
        return;
    }
    const edit = habitsEditWeight(area.value, area.selectionStart, area.selectionEnd, e.key === "ArrowUp");
    if (!edit) {
        return;
    }
    e.preventDefault();
    area.value = edit.text;
    area.setSelectionRange(edit.start, edit.end);
    area.dispatchEvent(new Event("input", {bubbles: true}));   // Gradio reads the new value
}, true);

// ---------------------------------------------------------------------------------------------------------------------
// Generate forever
// ---------------------------------------------------------------------------------------------------------------------
const habitsForever = {};   // tab -> {timer, lastEnd}

/** The marker of the last finished job of `tab` (the progress line's data-job-end), "" when none. */
function habitsJobEnd(tab) {
    const marker = document.querySelector(`#${tab}_progress [data-job-end]`);
    return marker ? marker.dataset.jobEnd : "";
}

/** Whether `tab` shows a job waiting or running (a progress line without the end marker). */
function habitsJobRunning(tab) {
    const progress = document.querySelector(`#${tab}_progress`);
    return Boolean(progress && progress.querySelector(".progress-text") && !progress.querySelector("[data-job-end]"));
}

function habitsStopForever(tab) {
    const state = habitsForever[tab];
    if (state) {
        clearInterval(state.timer);
        delete habitsForever[tab];
    }
    document.getElementById(`${tab}_generate`)?.classList.remove("generate-forever");
}

/** Press Generate of `tab` now (unless a job runs) and again each time its job ends, until cancelled or a job fails. */
function habitsStartForever(tab) {
    habitsStopForever(tab);
    const state = {lastEnd: null};
    habitsForever[tab] = state;
    document.getElementById(`${tab}_generate`)?.classList.add("generate-forever");
    const tick = () => {
        if (habitsForever[tab] !== state || habitsJobRunning(tab)) {
            return;
        }
        const end = habitsJobEnd(tab);
        if (state.lastEnd !== null && end === state.lastEnd) {
            return;     // the job we started has not begun yet
        }
        if (state.lastEnd !== null && end.startsWith("failed")) {
            habitsStopForever(tab);     // a job that fails would fail forever: stop, its error stays in view
            return;
        }
        state.lastEnd = end;
        document.getElementById(`${tab}_generate`)?.click();
    };
    state.timer = setInterval(tick, 500);
    tick();
}

function habitsHideMenu() {
    document.getElementById("context-menu")?.remove();
}

function habitsShowMenu(x, y, items) {
    habitsHideMenu();
    const nav = document.createElement("nav");
    nav.id = "context-menu";
    nav.style.cssText = `position:absolute; left:${x}px; top:${y}px; z-index:10000; background:var(--block-background-fill, #fff);` +
        "border:1px solid var(--border-color-primary, #ccc); border-radius:6px; box-shadow:0 2px 8px rgba(0,0,0,.25);" +
        "padding:4px 0; font-size:0.9rem";
    const list = document.createElement("ul");
    list.className = "context-menu-items";
    list.style.cssText = "list-style:none; margin:0; padding:0";
    for (const [label, action] of items) {
        const item = document.createElement("li");
        item.textContent = label;
        item.style.cssText = "padding:4px 14px; cursor:pointer; white-space:nowrap";
        item.addEventListener("mouseenter", () => { item.style.background = "var(--neutral-200, #eee)"; });
        item.addEventListener("mouseleave", () => { item.style.background = ""; });
        item.addEventListener("click", () => { habitsHideMenu(); action(); });
        list.appendChild(item);
    }
    nav.appendChild(list);
    document.body.appendChild(nav);
}

document.addEventListener("contextmenu", (e) => {
    const button = e.target.closest && e.target.closest("#txt2img_generate, #img2img_generate");
    if (!button) {
        habitsHideMenu();
        return;
    }
    e.preventDefault();
    const tab = button.id.replace(/_generate$/, "");
    habitsShowMenu(e.pageX, e.pageY, [
        ["Generate forever", () => habitsStartForever(tab)],
        ["Cancel generate forever", () => habitsStopForever(tab)],
    ]);
}, true);

document.addEventListener("click", (e) => {
    // a person's click elsewhere closes the menu (not the clicks Generate forever makes on Generate)
    if (e.isTrusted && (!e.target.closest || !e.target.closest("#context-menu"))) {
        habitsHideMenu();
    }
});
