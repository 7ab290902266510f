/* History tab and Image Browser: buttons inside server-rendered HTML hand an id to a hidden Gradio button, whose
   event reads it from window.historyActionId / window.imageBrowserActionId (see modules/ui_history.py). */

function historyAction(buttonId, taskId) {
    window.historyActionId = taskId;
    const button = gradioApp().getElementById(buttonId);
    if (button) {
        button.click();
    }
}

/** Cancel a waiting job, or interrupt the running one. */
function historyCancel(taskId) {
    historyAction("history_cancel_button", taskId);
}

/** Show a past job (its pictures and infotext) in the History tab. */
function historySelect(taskId) {
    historyAction("history_select_button", taskId);
}

/* Open (list) the History / Image Browser tab when a person switches to it, and stop the History tab's refresh when
   they leave it. Tab changes are reported only after the page has shown every tab once (javascript/webui.js), so
   loading the page never scans the output folders. */
let historyLastTab = "";

function historyTabChanged() {
    const tab = get_uiCurrentTab();
    const id = tab ? tab.dataset.tabId || "" : "";
    if (id === historyLastTab) {
        return;
    }
    const click = (elemId) => gradioApp().getElementById(elemId)?.click();
    if (historyLastTab === "history") {
        click("history_close");
    }
    if (id === "history") {
        click("history_open");
    } else if (id === "image_browser") {
        click("image_browser_open");
    }
    historyLastTab = id;
}

// this file loads before webui.js (which defines onUiTabChange): register once it is there
(function historyRegister() {
    if (typeof onUiTabChange === "function") {
        onUiTabChange(historyTabChanged);
    } else {
        setTimeout(historyRegister, 20);
    }
})();
