// Progressive enhancement only: the pages work without it.
// The new-mailbox form shows the address the naming rules would give,
// while the name is typed (the "Anteprima" button does the same without JS).
document.addEventListener("DOMContentLoaded", () => {
  const form = document.querySelector("form[data-suggest]");
  if (!form) return;
  const out = document.getElementById("suggested");
  const names = ["nome", "cognome", "codice_fiscale", "alias"];
  let timer;
  const update = () => {
    clearTimeout(timer);
    timer = setTimeout(async () => {
      const q = new URLSearchParams();
      for (const n of names) q.set(n, form.elements[n] ? form.elements[n].value : "");
      if (!q.get("nome") || !q.get("cognome")) { out.textContent = "—"; return; }
      try {
        const r = await fetch(form.dataset.suggest + "?" + q.toString(), { credentials: "same-origin" });
        const j = await r.json();
        out.textContent = j.address || j.error || "—";
      } catch (e) { /* keep the last suggestion */ }
    }, 250);
  };
  for (const n of names) if (form.elements[n]) form.elements[n].addEventListener("input", update);
});
