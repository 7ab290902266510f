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
