// Injected into the page's <head> while the extension is enabled.
console.log("example-extension loaded");
