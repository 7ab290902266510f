// Extra-networks cards (modules/ui_extra_networks.py): a click on a card adds its tag to the prompt or, when it is
// there, removes it (as A1111); a checkpoint card loads the checkpoint; ✎ opens the user-metadata editor; 🖼 makes
// the image selected in the gallery the card's preview. The search box filters the cards as you type.
// Requests go to the server through the hidden textbox {tab}_extra_request and the hidden buttons beside it.

function extraNetworksEscapeRegex(text) {
    return text.replace(/[.*+?^${}()|[\]\\]/g, "\\$&");
}

/** `value` with the text from `start` to `end` taken out and the two sides joined tidily. */
function extraNetworksCut(value, start, end) {
    let before = value.slice(0, start).replace(/[ \t]+$/, "");
    let after = value.slice(end).replace(/^[ \t]+/, "");
    if (before.endsWith(",") && after.startsWith(",")) {
        after = after.slice(1).replace(/^[ \t]+/, "");
    }
    if (!after && before.endsWith(",")) {
        before = before.slice(0, -1);
    }
    if (!before) {
        return after.replace(/^,[ \t]*/, "");
    }
    if (!after) {
        return before;
    }
    return /^[,\n]/.test(after) || before.endsWith("\n") ? before + after : before + " " + after;
}

/** Where `text` is in `value` as a whole word (the way a click added it), or null. */
function extraNetworksFindText(value, text) {
    const match = new RegExp(`(^|[\\s,(\\[])${extraNetworksEscapeRegex(text)}(?=$|[\\s,:)\\]])`).exec(value);
    if (!match) {
        return null;
    }
    const start = match.index + match[1].length, end = start + text.length;
    const weighted = match[1] === "(" ? /^(:\s*[-+]?[\d.]+\s*)?\)/.exec(value.slice(end)) : null;
    // "(name:1.2)": the brackets and weight go with the name
    return weighted ? {start: start - 1, end: end + weighted[0].length} : {start, end};
}

/**
 * `value` with `text` added at the end, or taken out when it is already there. A tag (`<lora:name:1> words`) is
 * found by its kind and name whatever its weight, and the activation text after it goes with it.
 * Returns {value, removed}.
 */
function extraNetworksToggle(value, text) {
    const tag = /^<(\w+):([^:>]+)(?::[^>]*)?>\s*([\s\S]*)$/.exec(text);
    let found = null;
    if (tag) {
        const re = new RegExp(`<${extraNetworksEscapeRegex(tag[1])}:${extraNetworksEscapeRegex(tag[2])}(?::[^>]*)?>`);
        const match = re.exec(value);
        if (match) {
            found = {start: match.index, end: match.index + match[0].length};
            const activation = tag[3].trim();
            if (activation) {
                const rest = new RegExp(`^\\s*${extraNetworksEscapeRegex(activation)}`).exec(value.slice(found.end));
                if (rest) {
                    found.end += rest[0].length;
                }
            }
        }
    } else {
        found = extraNetworksFindText(value, text);
    }
    if (found) {
        return {value: extraNetworksCut(value, found.start, found.end), removed: true};
    }
    const base = value.replace(/\s+$/, "");
    // A1111's extra_networks_add_text_separator: what goes between the prompt and the added text
    const sep = typeof opts !== "undefined" && typeof opts.extra_networks_add_text_separator === "string"
        ? opts.extra_networks_add_text_separator : " ";
    return {value: base ? `${base}${sep}${text}` : text, removed: false};
}

function extraNetworksSetText(textarea, value) {
    textarea.value = value;
    updateInput(textarea);
}

/** The tab ("txt2img" / "img2img") a card or control belongs to. */
function extraNetworksTabOf(el) {
    const holder = el.closest("[id$='_extra_networks']");
    return holder ? holder.id.replace(/_extra_networks$/, "") : null;
}

/** Send {page, name, ...} to the server's handler behind the hidden button `{tab}_extra_{action}_button`. */
function extraNetworksRequest(tab, action, data) {
    const box = gradioApp().querySelector(`#${tab}_extra_request textarea, #${tab}_extra_request input`);
    const button = gradioApp().querySelector(`#${tab}_extra_${action}_button`);
    if (!box || !button) {
        return;
    }
    extraNetworksSetText(box, JSON.stringify({...data, nonce: Date.now()}));
    setTimeout(() => button.click(), 0);
}

function extraNetworksCardClicked(card, event) {
    const tab = extraNetworksTabOf(card);
    if (!tab) {
        return;
    }
    const data = {page: card.dataset.page, name: card.dataset.name};
    if (event.target.closest("button.edit-metadata")) {
        extraNetworksRequest(tab, "edit", data);
        return;
    }
    if (event.target.closest("button.replace-preview")) {
        extraNetworksRequest(tab, "preview", {...data, gallery_index: selected_gallery_index()});
        return;
    }
    if (card.dataset.checkpoint) {
        extraNetworksRequest(tab, "checkpoint", data);
        return;
    }
    const prompt = gradioApp().querySelector(`#${tab}_prompt textarea`);
    const negative = gradioApp().querySelector(`#${tab}_neg_prompt textarea`);
    if (!prompt) {
        return;
    }
    const result = extraNetworksToggle(prompt.value, card.dataset.prompt);
    extraNetworksSetText(prompt, result.value);
    const negativeText = card.dataset.negative;
    if (negative && negativeText) {
        const where = extraNetworksFindText(negative.value, negativeText);
        if (result.removed && where) {
            extraNetworksSetText(negative, extraNetworksCut(negative.value, where.start, where.end));
        } else if (!result.removed && !where) {
            extraNetworksSetText(negative, extraNetworksToggle(negative.value, negativeText).value);
        }
    }
    extraNetworksMarkInPrompt(tab, true);
}

/** Hide the cards of `searchId`'s page that do not contain every word typed. */
function extraNetworksFilter(searchId) {
    const box = gradioApp().querySelector(`#${searchId} textarea, #${searchId} input`);
    const cards = gradioApp().querySelector(`#${searchId.replace(/_extra_search$/, "_cards")}`);
    if (!box || !cards) {
        return;
    }
    const words = box.value.toLowerCase().split(/\s+/).filter(Boolean);
    for (const card of cards.querySelectorAll(".extra-network-card")) {
        const text = card.dataset.search || "";
        card.classList.toggle("hidden-by-search", !words.every((w) => text.includes(w)));
    }
}

var extraNetworksLastPrompt = {};

/** Outline the cards whose tag (or embedding name) is in the tab's prompt. */
function extraNetworksMarkInPrompt(tab, force) {
    const prompt = gradioApp().querySelector(`#${tab}_prompt textarea`);
    const holder = gradioApp().querySelector(`#${tab}_extra_networks`);
    if (!prompt || !holder) {
        return;
    }
    const cards = holder.querySelectorAll(".extra-network-card");
    const key = `${prompt.value}\u0000${cards.length}`;
    if (!force && extraNetworksLastPrompt[tab] === key) {
        return;
    }
    extraNetworksLastPrompt[tab] = key;
    for (const card of cards) {
        let present = false;
        if (card.dataset.tag) {
            const re = new RegExp(`<${extraNetworksEscapeRegex(card.dataset.tag)}:` +
                                  `${extraNetworksEscapeRegex(card.dataset.name)}(?::[^>]*)?>`);
            present = re.test(prompt.value);
        } else if (!card.dataset.checkpoint) {
            present = extraNetworksFindText(prompt.value, card.dataset.name) !== null;
        }
        card.classList.toggle("in-prompt", present);
    }
}

document.addEventListener("click", (event) => {
    const card = event.target.closest && event.target.closest(".extra-network-card");
    if (card) {
        event.preventDefault();
        extraNetworksCardClicked(card, event);
    }
});

document.addEventListener("input", (event) => {
    const search = event.target.closest && event.target.closest(".extra-network-search");
    if (search && search.id) {
        extraNetworksFilter(search.id);
    }
});

/** Run `register` once the page API of webui.js is there (this file may be loaded before it: files load by name). */
function extraNetworksWhenPageApi(register, tries = 400) {
    if (typeof onUiUpdate === "function" && typeof onUiLoaded === "function" && typeof webuiPage !== "undefined") {
        register();
    } else if (tries > 0) {
        setTimeout(() => extraNetworksWhenPageApi(register, tries - 1), 25);
    }
}

extraNetworksWhenPageApi(() => onUiUpdate(() => {
    // cards drawn again (refresh, sort, a saved preview) keep the search applied and the in-prompt outline
    for (const search of gradioApp().querySelectorAll(".extra-network-search")) {
        const box = search.querySelector("textarea, input");
        if (box && box.value) {
            extraNetworksFilter(search.id);
        }
    }
    for (const tab of ["txt2img", "img2img"]) {
        extraNetworksMarkInPrompt(tab, false);
    }
}));

extraNetworksWhenPageApi(() => onUiLoaded(() => {
    // tooltips of the small buttons (Gradio buttons have no title of their own)
    const titles = {
        styles_refresh: "Read styles.csv again",
        styles_edit_button: "Edit styles: create, change or delete a style (saved to styles.csv)",
        style_apply: "Apply the selected styles to the prompt boxes (and unselect them)",
        extra_refresh: "Read the model folders again: new files appear",
    };
    for (const tab of ["txt2img", "img2img"]) {
        for (const [id, title] of Object.entries(titles)) {
            const el = gradioApp().querySelector(`#${tab}_${id}`);
            if (el) {
                el.title = title;
            }
        }
    }
}));
