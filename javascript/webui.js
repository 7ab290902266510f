// The page's JavaScript API for extensions, with the global names A1111 web UI pages provide (gradioApp, onUiLoaded,
// onUiUpdate, opts, ...). Written for this web UI: it runs on Gradio 6's page, whose DOM differs from Gradio 3's, so
// the root that gradioApp() returns also understands a few of A1111's DOM paths (see a1111Selector).
//
// Loaded first in <head>, before every extension's javascript/*.js.

/* exported gradioApp, onUiUpdate, onAfterUiUpdate, onUiLoaded, onUiTabChange, onOptionsChanged, onOptionsAvailable,
   executeCallbacks, get_uiCurrentTab, get_uiCurrentTabContent, uiElementIsVisible, uiElementInSight, updateInput,
   switch_to_txt2img, switch_to_img2img, switch_to_img2img_tab, switch_to_inpaint, switch_to_extras,
   selected_gallery_index, get_tab_index, submit, submit_img2img, create_submit_args, randomId, getTranslation,
   localization, opts */

// ---------------------------------------------------------------------------------------------------------------------
// The settings: `opts` mirrors every option (the app's and those extensions add) and follows Apply settings.
// ---------------------------------------------------------------------------------------------------------------------
var opts = {};
var localization = window.localization || {};

var uiUpdateCallbacks = [];
var uiAfterUpdateCallbacks = [];
var uiLoadedCallbacks = [];
var uiTabChangeCallbacks = [];
var optionsChangedCallbacks = [];
var optionsAvailableCallbacks = [];

function onUiUpdate(callback) { uiUpdateCallbacks.push(callback); }
function onAfterUiUpdate(callback) { uiAfterUpdateCallbacks.push(callback); }
function onUiLoaded(callback) {
    // A script that runs after the page has loaded (an .mjs module can) still gets its call.
    if (webuiPage.uiLoaded) {
        setTimeout(() => executeCallbacks([callback]), 0);
    } else {
        uiLoadedCallbacks.push(callback);
    }
}
function onUiTabChange(callback) { uiTabChangeCallbacks.push(callback); }
function onOptionsChanged(callback) { optionsChangedCallbacks.push(callback); }
function onOptionsAvailable(callback) {
    // Called once the options are known; at once if they already are.
    if (webuiPage.optionsLoaded) {
        callback();
    } else {
        optionsAvailableCallbacks.push(callback);
    }
}

/** Call every callback of `queue` with `arg`; one that throws is reported in the console and the others still run. */
function executeCallbacks(queue, arg) {
    for (const callback of queue) {
        try {
            callback(arg);
        } catch (e) {
            console.error("error running callback", callback, ":", e);
        }
    }
}

var webuiPage = {
    optionsLoaded: false,
    optionsText: null,
    uiLoaded: false,     // every tab is in the page and onUiLoaded callbacks ran
    rendering: false,
    currentTab: null,
    afterUpdateTimer: null,
    root: null,
};

/** Read the settings the server put in the hidden #settings_json box; run the option callbacks when they changed. */
function webuiReadOptions() {
    const box = document.querySelector("#settings_json textarea, #settings_json input");
    if (!box || !box.value || box.value === webuiPage.optionsText) {
        return false;
    }
    let data;
    try {
        data = JSON.parse(box.value);
    } catch (e) {
        console.error("settings_json is not valid JSON:", e);
        return false;
    }
    webuiPage.optionsText = box.value;
    for (const key of Object.keys(opts)) {
        if (!(key in data)) {
            delete opts[key];
        }
    }
    Object.assign(opts, data);   // the same object: code that kept a reference to `opts` sees the new values
    if (!webuiPage.optionsLoaded) {
        webuiPage.optionsLoaded = true;
        executeCallbacks(optionsAvailableCallbacks);
        optionsAvailableCallbacks = [];
    }
    executeCallbacks(optionsChangedCallbacks);
    return true;
}

// ---------------------------------------------------------------------------------------------------------------------
// gradioApp(): the root element extensions search in
// ---------------------------------------------------------------------------------------------------------------------

// A1111's pages were built with Gradio 3; selectors extensions wrote for that DOM, and what they mean here.
var a1111SelectorRewrites = [
    // a Gradio 3 textbox/number is <label><span/><textarea/></label>; Gradio 6 wraps the textarea in a div
    [/>\s*label\s*>\s*(textarea|input)/g, "> label $1"],
    // Gradio 3's tab buttons sat in .tab-nav; Gradio 6 has them in the tablist of .tab-wrapper
    [/\.tab-nav\b/g, ".tab-wrapper > [role=tablist]"],
];

/** A selector written for A1111's (Gradio 3) page, rewritten for this page. */
function a1111Selector(selector) {
    let result = selector;
    for (const [pattern, replacement] of a1111SelectorRewrites) {
        result = result.replace(pattern, replacement);
    }
    return result;
}

function gradioApp() {
    if (webuiPage.root && webuiPage.root.isConnected) {
        return webuiPage.root;
    }
    const app = document.getElementsByTagName("gradio-app")[0];
    if (!app) {
        return document;
    }
    const root = app.shadowRoot || app;
    if (root === app) {
        // A1111's root answers getElementById too; and its querySelector(All) take A1111's DOM paths.
        const find = Element.prototype.querySelector;
        const findAll = Element.prototype.querySelectorAll;
        root.getElementById = (id) => document.getElementById(id);
        root.querySelector = function(selector) {
            return find.call(this, selector) || find.call(this, a1111Selector(selector));
        };
        root.querySelectorAll = function(selector) {
            const rewritten = a1111Selector(selector);
            return findAll.call(this, rewritten === selector ? selector : `${selector}, ${rewritten}`);
        };
    }
    webuiPage.root = root;
    return root;
}

// ---------------------------------------------------------------------------------------------------------------------
// Tabs and visibility
// ---------------------------------------------------------------------------------------------------------------------

/** The button of the selected top-level tab (its innerText is the tab's name: "txt2img", "img2img", ...). */
function get_uiCurrentTab() {
    return gradioApp().querySelector("#tabs > .tab-wrapper > [role=tablist] > button.selected");
}

/** The content element (`#tab_<name>`) of the selected top-level tab. */
function get_uiCurrentTabContent() {
    const items = gradioApp().querySelectorAll("#tabs > .tabitem[id^=tab_]");
    for (const item of items) {
        if (item.style.display !== "none" && getComputedStyle(item).display !== "none") {
            return item;
        }
    }
    return null;
}

/** Whether `el` is shown: neither it nor an ancestor is hidden (a hidden tab hides what it holds). */
function uiElementIsVisible(el) {
    if (!el) {
        return false;
    }
    if (el === document) {
        return true;
    }
    for (let node = el; node && node !== document; node = node.parentElement) {
        if (node.nodeType === Node.ELEMENT_NODE && getComputedStyle(node).display === "none") {
            return false;
        }
        if (node.parentElement === null && node !== document.documentElement) {
            return false;   // detached
        }
    }
    return true;
}

/** Whether `el` is visible and inside the window's viewport. */
function uiElementInSight(el) {
    const rect = el.getBoundingClientRect();
    const height = window.innerHeight || document.documentElement.clientHeight;
    const width = window.innerWidth || document.documentElement.clientWidth;
    return uiElementIsVisible(el) && rect.bottom > 0 && rect.right > 0 && rect.top < height && rect.left < width;
}

/** Index of the selected tab in the Gradio tabs element with id `tabId` (-1 if none). */
function get_tab_index(tabId) {
    const buttons = gradioApp().querySelectorAll(`#${tabId} > .tab-wrapper > [role=tablist] > button`);
    return Array.from(buttons).findIndex((b) => b.classList.contains("selected"));
}

function webuiSelectTab(tabsId, tabId) {
    const tablist = `#${tabsId} > .tab-wrapper > [role=tablist]`;
    const button = gradioApp().querySelector(`${tablist} > button[data-tab-id="${tabId}"]`);
    if (button) {
        button.click();
    } else {
        console.error(`no tab ${tabId} in #${tabsId}`);
    }
}

// Used by A1111 as the `_js` of buttons: they pass their arguments through.
function switch_to_txt2img() {
    webuiSelectTab("tabs", "txt2img");
    return Array.from(arguments);
}

function switch_to_img2img_tab(no) {
    webuiSelectTab("tabs", "img2img");
    const modes = ["img2img_tab", "inpaint_tab", "inpaint_upload_tab"];
    if (modes[no] !== undefined) {
        webuiSelectTab("mode_img2img", modes[no]);
    }
}

function switch_to_img2img() {
    switch_to_img2img_tab(0);
    return Array.from(arguments);
}

function switch_to_inpaint() {
    switch_to_img2img_tab(1);
    return Array.from(arguments);
}

function switch_to_extras() {
    webuiSelectTab("tabs", "extras");
    return Array.from(arguments);
}

// A1111's Generate `_js`: its arguments with a new task id (`task(XXXXXXX)`) in place of the first;
// submit_img2img also puts the selected img2img mode (index of the sub-tab) second. Extensions wrap or call them.
function randomId() {
    const chars = "ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789";
    return "task(" + Array.from({length: 7}, () => chars[Math.floor(Math.random() * chars.length)]).join("") + ")";
}

function create_submit_args(args) {
    return Array.from(args);
}

function submit() {
    const res = create_submit_args(arguments);
    if (res.length > 0) {
        res[0] = randomId();
    }
    return res;
}

function submit_img2img() {
    const res = submit.apply(null, arguments);
    if (res.length > 1) {
        res[1] = get_tab_index("mode_img2img");
    }
    return res;
}

/** Index of the image selected in the gallery of the current tab, -1 when none is selected. */
function selected_gallery_index() {
    const tab = get_uiCurrentTab();
    const name = tab ? tab.dataset.tabId || tab.innerText.trim() : "";
    const gallery = gradioApp().querySelector(`#${name}_gallery`);
    if (!gallery) {
        return -1;
    }
    const thumbnails = gallery.querySelectorAll(".thumbnail-item.thumbnail-small, button.thumbnail-item");
    return Array.from(thumbnails).findIndex((t) => t.classList.contains("selected"));
}

/** Tell Gradio that a script changed `target`'s value (as if the user typed), so the change reaches the server. */
function updateInput(target) {
    const event = new Event("input", {bubbles: true});
    Object.defineProperty(event, "target", {value: target});
    target.dispatchEvent(event);
}

/** The translation of `text` in the selected localization (Settings: localization), or undefined. */
function getTranslation(text) {
    if (!text) {
        return undefined;
    }
    return localization[text] ?? localization[text.trim()];
}

// Text the user typed or the app shows as data is never translated.
var webuiUntranslated = "textarea, input, script, style, code, pre, .prose, .infotext, [contenteditable]";

/** Translate the texts, placeholders and titles in `root` that the localization has a translation for. */
function webuiTranslate(root) {
    if (Object.keys(localization).length === 0 || !root || root.nodeType !== Node.ELEMENT_NODE) {
        return;
    }
    const walker = document.createTreeWalker(root, NodeFilter.SHOW_TEXT);
    for (let node = walker.nextNode(); node; node = walker.nextNode()) {
        const parent = node.parentElement;
        const translated = getTranslation(node.nodeValue);
        if (translated !== undefined && parent && !parent.closest(webuiUntranslated)) {
            node.nodeValue = node.nodeValue.replace(node.nodeValue.trim(), translated);
        }
    }
    for (const el of [root, ...root.querySelectorAll("[placeholder], [title]")]) {
        for (const attribute of ["placeholder", "title"]) {
            const translated = getTranslation(el.getAttribute(attribute));
            if (translated !== undefined) {
                el.setAttribute(attribute, translated);
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------------------------------
// Driving the callbacks from the page's mutations
// ---------------------------------------------------------------------------------------------------------------------
/** Show every tab once. Gradio 6 builds a tab's content the first time it is shown (closed accordions too), while
 * A1111's page holds every tab from the start and extensions look for elements in all of them when the page loads.
 * Each unvisited tab is selected for a moment, then the tabs selected before are selected again. */
async function webuiRenderAllTabs() {
    const frame = () => new Promise((resolve) => requestAnimationFrame(() => setTimeout(resolve, 0)));
    const visited = new Set();
    for (let pass = 0; pass < 6; pass++) {
        const lists = Array.from(gradioApp().querySelectorAll(".tab-wrapper > [role=tablist]"));
        const pending = lists.filter((list) => !visited.has(list));
        if (pending.length === 0) {
            break;
        }
        for (const list of pending) {
            visited.add(list);
            const buttons = Array.from(list.querySelectorAll(":scope > button[role=tab]"));
            const selected = buttons.find((b) => b.classList.contains("selected"));
            for (const button of buttons) {
                if (button !== selected && !button.disabled) {
                    button.click();
                    await frame();
                }
            }
            if (selected && !selected.classList.contains("selected")) {
                selected.click();
                await frame();
            }
        }
    }
}

function webuiCheckTab() {
    const tab = get_uiCurrentTab();
    if (tab && tab !== webuiPage.currentTab) {
        webuiPage.currentTab = tab;
        executeCallbacks(uiTabChangeCallbacks);
    }
}

function webuiOnMutations(mutations) {
    webuiReadOptions();
    if (!webuiPage.uiLoaded) {
        // extensions see the page once every tab is in it (as on A1111's page)
        if (!webuiPage.rendering && gradioApp().querySelector("#txt2img_prompt textarea")) {
            webuiPage.rendering = true;
            webuiRenderAllTabs().catch((e) => console.error("showing the tabs failed:", e)).finally(() => {
                webuiReadOptions();
                webuiPage.uiLoaded = true;
                // selecting a tab only changes classes (no element is added): watch the top-level tab buttons
                const buttons = gradioApp().querySelector("#tabs > .tab-wrapper");
                if (buttons) {
                    new MutationObserver(webuiCheckTab).observe(buttons, {attributes: true, subtree: true,
                        attributeFilter: ["class"]});
                }
                webuiTranslate(document.body);
                executeCallbacks(uiLoadedCallbacks);
                webuiOnMutations([]);
            });
        }
        return;
    }
    for (const mutation of mutations) {
        mutation.addedNodes.forEach(webuiTranslate);
    }
    executeCallbacks(uiUpdateCallbacks, mutations);
    webuiCheckTab();
    clearTimeout(webuiPage.afterUpdateTimer);
    webuiPage.afterUpdateTimer = setTimeout(() => executeCallbacks(uiAfterUpdateCallbacks), 200);
}

// ---------------------------------------------------------------------------------------------------------------------
// Keyboard habits of A1111's prompt boxes: Ctrl+Enter (Cmd+Enter on a Mac) generates, Alt+Enter skips the image being
// made, Esc interrupts. They act on the tab whose prompt or negative prompt has the focus.
// ---------------------------------------------------------------------------------------------------------------------
/** The tab ("txt2img" / "img2img") whose prompt box `el` is, or null. */
function webuiPromptTab(el) {
    if (!el || el.tagName !== "TEXTAREA") {
        return null;
    }
    const box = el.closest("[id$='_prompt'], [id$='_neg_prompt']");
    const match = box && /^(txt2img|img2img)_(neg_)?prompt$/.exec(box.id);
    return match ? match[1] : null;
}

document.addEventListener("keydown", (e) => {
    const tab = webuiPromptTab(e.target);
    if (!tab) {
        return;
    }
    let button = null;
    if (e.key === "Enter" && (e.ctrlKey || e.metaKey) && !e.altKey) {
        button = "generate";
    } else if (e.key === "Enter" && e.altKey && !e.ctrlKey && !e.metaKey) {
        button = "skip";
    } else if (e.key === "Escape") {
        button = "interrupt";
    }
    const target = button && document.getElementById(`${tab}_${button}`);
    if (target) {
        e.preventDefault();
        e.stopPropagation();
        target.click();
    }
}, true);

function webuiStart() {
    const observer = new MutationObserver(webuiOnMutations);
    observer.observe(gradioApp(), {childList: true, subtree: true});
    // The settings box changes its value without a DOM mutation after Apply settings: look now and then.
    setInterval(webuiReadOptions, 500);
    webuiOnMutations([]);
}

if (document.readyState === "loading") {
    document.addEventListener("DOMContentLoaded", webuiStart);
} else {
    webuiStart();
}

