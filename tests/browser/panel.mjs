// End-to-end test of pecd's web panel in Debian's headless Chromium,
// driven by playwright-core. Started by tests/browser.rs, which runs the
// daemon on 127.0.0.1 and passes, in the environment:
//   PECD_URL, PECD_DOMAIN, PECD_ADMIN_TOKEN, ORDER_A, ORDER_A_PW, ORDER_B,
//   ORDER_B_PW, PECD_CFS (valid codici fiscali, comma-separated),
//   PECD_SHOTS (screenshot directory), PECD_CHROMIUM (browser binary).
// Exits non-zero, naming the step, on the first failed expectation.
import { chromium } from "playwright-core";
import assert from "node:assert/strict";
import fs from "node:fs";
import path from "node:path";
import crypto from "node:crypto";

const E = process.env;
const base = E.PECD_URL;
const dom = E.PECD_DOMAIN;
const cfs = E.PECD_CFS.split(",");
const shots = E.PECD_SHOTS;
fs.mkdirSync(shots, { recursive: true });

const browser = await chromium.launch({
  executablePath: E.PECD_CHROMIUM || "/usr/bin/chromium",
  // As root in a container, and with no network beyond loopback.
  args: ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync"],
});
let step = "start";
const shot = (page, name) => page.screenshot({ path: path.join(shots, `${name}.png`), fullPage: true });
const box = (local) => `${local}@${dom}`;
const detailUrl = (addr) => `${base}/ordine/caselle/${encodeURIComponent(addr)}`;

// RFC 6238 (HMAC-SHA1, 6 digits, 30 s), as an authenticator app computes it;
// `ahead` steps later (a code not yet spent, still inside the allowed skew).
function totp(secret, ahead = 0) {
  const alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";
  let bits = 0, val = 0;
  const key = [];
  for (const c of secret) {
    val = ((val << 5) | alphabet.indexOf(c)) & 0xffff;
    bits += 5;
    if (bits >= 8) { key.push((val >>> (bits - 8)) & 255); bits -= 8; }
  }
  const ctr = Buffer.alloc(8);
  ctr.writeBigUInt64BE(BigInt(Math.floor(Date.now() / 30000) + ahead));
  const mac = crypto.createHmac("sha1", Buffer.from(key)).update(ctr).digest();
  const off = mac[19] & 15;
  const bin = ((mac[off] & 127) << 24) | (mac[off + 1] << 16) | (mac[off + 2] << 8) | mac[off + 3];
  return String(bin % 1000000).padStart(6, "0");
}

async function orderLogin(page, id, pw) {
  await page.goto(`${base}/ordine/login`);
  await page.fill("#f-ordine", id);
  await page.fill("#f-password", pw);
  await page.click("button:has-text('Accedi')");
  await page.waitForURL(`${base}/ordine`);
}

async function fillHolder(page, nome, cognome, cf) {
  await page.fill("#f-nome", nome);
  await page.fill("#f-cognome", cognome);
  await page.fill("#f-codice_fiscale", cf);
  await page.fill("#f-indirizzo", "Via Roma 1");
  await page.fill("#f-comune", "Lodi");
  await page.fill("#f-provincia", "LO");
  await page.fill("#f-cap", "26900");
}

try {
  // ---------------------------------------------------------------- order A
  const ctxA = await browser.newContext({ acceptDownloads: true });
  const a = await ctxA.newPage();

  step = "order login with a wrong password shows the error";
  await a.goto(`${base}/ordine/login`);
  await shot(a, "01-ordine-login");
  await a.fill("#f-ordine", E.ORDER_A);
  await a.fill("#f-password", "sbagliata");
  await a.click("button:has-text('Accedi')");
  await a.getByText("Credenziali non valide.").waitFor();

  step = "order login";
  await a.fill("#f-password", E.ORDER_A_PW);
  await a.click("button:has-text('Accedi')");
  await a.waitForURL(`${base}/ordine`);
  await a.getByRole("heading", { name: "Cruscotto" }).waitFor();

  step = "session cookie is HttpOnly and SameSite=Strict";
  const [cookie] = (await ctxA.cookies()).filter((c) => c.name === "pecd_sid");
  assert.ok(cookie, "session cookie");
  assert.equal(cookie.httpOnly, true);
  assert.equal(cookie.sameSite, "Strict");

  step = "a form posted without its CSRF token is refused";
  const forged = await a.request.post(`${base}/ordine/caselle/nuova`, {
    form: { nome: "X", cognome: "Y", azione: "crea" },
  });
  assert.equal(forged.status(), 403);

  step = "create a mailbox: the address is suggested live while typing";
  await a.click("nav >> text=Nuova casella");
  await fillHolder(a, "Marco", "Bruni", cfs[0]);
  await a.fill("#f-reference_email", "marco@example.test");
  await a.waitForFunction(
    (want) => document.getElementById("suggested").textContent.trim() === want,
    box("marco.bruni"),
  );
  await shot(a, "02-nuova-casella");
  await a.click("button:has-text('Crea la casella')");
  await a.getByText("è stata creata").waitFor();
  const marcoPw = (await a.textContent("#password")).trim();
  assert.equal(marcoPw.length, 12);

  step = "a wrong field is named next to it";
  await a.goto(`${base}/ordine/caselle/nuova`);
  await fillHolder(a, "Paolo", "Gialli", "RSSMRA85T10A562X");
  await a.click("button:has-text('Crea la casella')");
  const cfError = await a.textContent("#e-codice_fiscale");
  assert.match(cfError, /Codice fiscale non valido/);

  step = "bulk load: a bad row is named and nothing is applied";
  const header = "nome;cognome;codice_fiscale;indirizzo;comune;provincia;cap\n";
  const rows = (cap) =>
    header + `Luca;Verdi;${cfs[2]};Via Po 2;Lodi;LO;26900\nAnna;Neri;${cfs[3]};Via Po 3;Lodi;LO;${cap}\n`;
  await a.click("nav >> text=Caricamento massivo");
  await a.setInputFiles("#f-file", { name: "iscritti.csv", mimeType: "text/csv", buffer: Buffer.from(rows("2690")) });
  await a.click("button:has-text('Verifica il file')");
  const cells = await a.$$eval("#rejected tbody td", (tds) => tds.map((t) => t.textContent.trim()));
  assert.deepEqual(cells, ["3", "cap", "Il CAP è di cinque cifre."], "line, field, message");
  await shot(a, "03-caricamento-errori");
  const before = await a.request.get(`${base}/ordine/caselle?q=verdi`);
  assert.ok(!(await before.text()).includes(box("luca.verdi")), "nothing applied before confirming");

  step = "bulk load: the fixed file passes, is confirmed, credentials download";
  await a.setInputFiles("#f-file", { name: "iscritti.csv", mimeType: "text/csv", buffer: Buffer.from(rows("26900")) });
  await a.click("button:has-text('Verifica il file')");
  await a.getByText("Tutte le 2 righe sono valide").waitFor();
  await a.click("button:has-text('Conferma e crea le caselle')");
  await a.getByText("2 caselle create.").waitFor();
  const [dl] = await Promise.all([
    a.waitForEvent("download"),
    a.click("text=Scarica il file delle credenziali"),
  ]);
  const creds = fs.readFileSync(await dl.path(), "utf8");
  assert.match(creds, /^indirizzo;password_temporanea\n/);
  assert.match(creds, new RegExp(`${box("luca.verdi").replace(".", "\\.")};\\w{12}\\n`));
  assert.ok(creds.includes(box("anna.neri")));

  step = "bulk load: a report replaced in another tab is not the one confirmed";
  const one = (n, c) => header + `${n};Riva;${c};Via Po 4;Lodi;LO;26900\n`;
  const tab2 = await ctxA.newPage();
  await a.click("nav >> text=Caricamento massivo");
  await a.setInputFiles("#f-file", { name: "primo.csv", mimeType: "text/csv", buffer: Buffer.from(one("Elsa", cfs[5])) });
  await a.click("button:has-text('Verifica il file')");
  await a.getByText("Tutte le 1 righe sono valide").waitFor();
  await tab2.goto(`${base}/ordine/carica`);
  await tab2.setInputFiles("#f-file", { name: "secondo.csv", mimeType: "text/csv", buffer: Buffer.from(one("Ivo", cfs[6])) });
  await tab2.click("button:has-text('Verifica il file')");
  await tab2.getByText("Tutte le 1 righe sono valide").waitFor();
  await a.click("button:has-text('Conferma e crea le caselle')");
  await a.getByText("Nel frattempo è stato caricato un altro file").waitFor();
  await tab2.click("button:has-text('Conferma e crea le caselle')");
  await tab2.getByText("1 caselle create.").waitFor();
  const rivas = await (await a.request.get(`${base}/ordine/caselle?q=riva`)).text();
  assert.ok(rivas.includes(box("ivo.riva")) && !rivas.includes(box("elsa.riva")), "only the report confirmed");
  await tab2.close();

  step = "reset a password";
  await a.goto(detailUrl(box("luca.verdi")));
  await a.click("button:has-text('Reimposta la password')");
  const newPw = (await a.textContent("#new-password")).trim();
  assert.equal(newPw.length, 12);

  step = "edit the anagrafica: a wrong CAP is named, then saved";
  assert.equal(await a.getAttribute("#f-codice_fiscale", "readonly"), "", "codice fiscale read-only");
  assert.equal(await a.getAttribute("#f-nome", "readonly"), "", "name read-only");
  await a.fill("#f-cap", "123");
  await a.click(`button:has-text("Salva l'anagrafica")`);
  assert.equal((await a.textContent("#e-cap")).trim(), "Il CAP è di cinque cifre.");
  await a.fill("#f-comune", "Codogno");
  await a.fill("#f-cap", "26845");
  await a.click(`button:has-text("Salva l'anagrafica")`);
  await a.getByText("Anagrafica aggiornata.").waitFor();
  assert.equal(await a.inputValue("#f-comune"), "Codogno");

  step = "report an anomaly on a mailbox";
  await a.fill("#f-note", "Non è un nostro iscritto");
  await a.click("button:has-text('Invia la segnalazione')");
  await a.getByText("inviata all'amministrazione nazionale").waitFor();

  step = "transfer a mailbox to the other order";
  await a.goto(detailUrl(box("anna.neri")));
  await a.fill("#f-to", E.ORDER_B);
  await a.click("button:has-text('Trasferisci')");
  await a.getByText(`è stata trasferita all'ordine ${E.ORDER_B}`).waitFor();
  const afterTransfer = await a.request.get(detailUrl(box("anna.neri")));
  assert.equal(afterTransfer.status(), 404, "no longer this order's");

  step = "detail page and dashboard screenshots";
  await a.goto(detailUrl(box("marco.bruni")));
  await a.getByRole("heading", { name: "Anagrafica" }).waitFor();
  const history = await a.textContent("section[aria-labelledby=h-hist]");
  assert.match(history, new RegExp(`order:${E.ORDER_A}\\)`), "who changed it");
  assert.ok(!history.includes("panel,"), "not the address they worked from");
  await shot(a, "04-scheda-casella");
  await a.goto(`${base}/ordine`);
  await shot(a, "05-cruscotto");
  const dash = await a.textContent("main");
  assert.match(dash, /Primi accessi in attesa \(3\)/, "three pending mailboxes (first-access order; one transferred)");

  step = "exports";
  const feed = await a.request.get(`${base}/ordine/esporta/registro.csv`);
  assert.equal(feed.status(), 200);
  const feedText = await feed.text();
  assert.ok(feedText.startsWith("codice_fiscale;pec;ordine;stato"));
  assert.ok(feedText.includes(box("marco.bruni")) && !feedText.includes(box("anna.neri")));
  const listCsv = await (await a.request.get(`${base}/ordine/esporta/caselle.csv`)).text();
  assert.ok(listCsv.startsWith("indirizzo;cognome;nome;codice_fiscale"));

  // ------------------------------------------------- without JavaScript
  step = "without JavaScript: preview button suggests the homonym's address";
  const ctxNoJs = await browser.newContext({ javaScriptEnabled: false });
  const nj = await ctxNoJs.newPage();
  await orderLogin(nj, E.ORDER_A, E.ORDER_A_PW);
  await nj.goto(`${base}/ordine/caselle/nuova`);
  await fillHolder(nj, "Marco", "Bruni", cfs[1]);
  await nj.click("button:has-text('Anteprima indirizzo')");
  assert.equal((await nj.textContent("#suggested")).trim(), box("marco.bruni.2"));
  await nj.click("button:has-text('Crea la casella')");
  await nj.getByText(box("marco.bruni.2")).first().waitFor();
  await ctxNoJs.close();

  step = "cancellation: the rules are enforced and the reason recorded";
  await a.goto(detailUrl(box("marco.bruni.2")));
  await a.selectOption("#f-reason", "request");
  await a.click("button:has-text('Cessa la casella')");
  assert.match(await a.textContent("#e-other_pec"), /altro indirizzo PEC come domicilio digitale/);
  await a.selectOption("#f-reason", "request");
  await a.fill("#f-other_pec", "marco.bruni@pec.altro.test");
  await a.click("button:has-text('Cessa la casella')");
  await a.getByText("Cessazione registrata: casella cessata.").waitFor();
  assert.equal((await a.textContent("#stato")).trim(), "cessata");

  // ---------------------------------------------------------------- order B
  step = "order B logs in with the keyboard alone";
  const ctxB = await browser.newContext();
  const b = await ctxB.newPage();
  await b.goto(`${base}/ordine/login`);
  await b.focus("#f-ordine");
  await b.keyboard.type(E.ORDER_B);
  await b.keyboard.press("Tab");
  await b.keyboard.type(E.ORDER_B_PW);
  await b.keyboard.press("Enter");
  await b.waitForURL(`${base}/ordine`);

  step = "order B cannot see order A's mailboxes, even by URL";
  const peek = await b.goto(detailUrl(box("marco.bruni")));
  assert.equal(peek.status(), 404);
  await b.getByText("Pagina non trovata").first().waitFor();
  await b.goto(`${base}/ordine/caselle`);
  const listB = await b.textContent("main");
  assert.ok(!listB.includes(box("marco.bruni")), "A's mailbox not listed");
  assert.ok(listB.includes(box("anna.neri")), "the transferred mailbox is B's now");
  const post = await b.request.get(`${base}/ordine/caselle/${encodeURIComponent(box("luca.verdi"))}`);
  assert.equal(post.status(), 404);

  step = "order B turns on the second factor; then login needs the code";
  await b.click("nav >> text=Sicurezza");
  await b.click("button:has-text('Attiva il secondo fattore')");
  const secret = (await b.textContent("#totp-secret")).trim();
  await b.fill("#f-codice", "000000" === totp(secret) ? "111111" : "000000");
  await b.click("button:has-text('Attiva')");
  await b.getByText("Codice non valido.").waitFor();
  await b.fill("#f-codice", totp(secret));
  await b.click("button:has-text('Attiva')");
  await b.getByText("Secondo fattore attivato").waitFor();
  assert.equal((await b.textContent("#totp-state")).trim(), "attivo");
  await b.click("button:has-text('Esci')");
  await b.waitForURL(`${base}/ordine/login`);
  await b.fill("#f-ordine", E.ORDER_B);
  await b.fill("#f-password", E.ORDER_B_PW);
  await b.click("button:has-text('Accedi')");
  await b.getByText("Inserire il codice a 6 cifre").waitFor();
  await b.fill("#f-password", E.ORDER_B_PW);
  await b.fill("#f-codice", totp(secret));
  await b.click("button:has-text('Accedi')");
  await b.waitForURL(`${base}/ordine`);

  step = "turning the second factor off asks for a code not spent yet";
  await b.click("nav >> text=Sicurezza");
  await b.fill("#f-codice", totp(secret));
  await b.click("button:has-text('Disattiva il secondo fattore')");
  await b.getByText("Codice non valido.").waitFor();
  assert.equal((await b.textContent("#totp-state")).trim(), "attivo");
  await b.fill("#f-codice", totp(secret, 1));
  await b.click("button:has-text('Disattiva il secondo fattore')");
  await b.getByText("Secondo fattore disattivato.").waitFor();
  assert.equal((await b.textContent("#totp-state")).trim(), "non attivo");

  step = "a panel password set anew by the national administrator ends order B's session";
  const reset = await fetch(`${base}/tenants/${E.ORDER_B}/panel-password`, {
    method: "POST",
    headers: { Authorization: `Bearer ${E.PECD_ADMIN_TOKEN}`, "Content-Type": "application/json" },
    body: "{}",
  });
  assert.equal(reset.status, 200);
  await b.goto(`${base}/ordine/caselle`);
  await b.waitForURL(`${base}/ordine/login`);

  // --------------------------------------------------------------- national
  step = "the national administrator sees and resolves the anomaly";
  const ctxN = await browser.newContext();
  const n = await ctxN.newPage();
  await n.goto(`${base}/nazionale/login`);
  await n.fill("#f-token", E.PECD_ADMIN_TOKEN);
  await n.click("button:has-text('Accedi')");
  await n.waitForURL(`${base}/nazionale`);
  await n.getByText("Non è un nostro iscritto").waitFor();
  assert.ok((await n.textContent("main")).includes(box("luca.verdi")));
  await n.fill("textarea[name=note]", "Casella riassegnata all'ordine corretto");
  await n.click("button:has-text('Chiudi la segnalazione')");
  await n.getByText("Segnalazione chiusa.").waitFor();
  await n.getByRole("heading", { name: "Chiuse (1)" }).waitFor();

  // ----------------------------------------------------------------- holder
  step = "holder: login with the temporary password leads to the first access";
  const ctxH = await browser.newContext({ acceptDownloads: true });
  const h = await ctxH.newPage();
  await h.goto(`${base}/casella/login`);
  await h.fill("#f-indirizzo", box("marco.bruni"));
  await h.fill("#f-password", marcoPw);
  await h.click("button:has-text('Accedi')");
  await h.waitForURL(`${base}/casella/primo-accesso`);
  await shot(h, "06-primo-accesso");

  step = "holder: the unconfirmed data is named";
  await h.fill("#f-new_password", "nuova-password-1");
  await h.fill("#f-confirm_password", "nuova-password-1");
  await h.click("button:has-text('Attiva la casella')");
  await h.getByText("Confermare i dati anagrafici.").waitFor();

  step = "holder: first access completed";
  await h.check("#f-confirm_data");
  await h.check("#f-accept_contract");
  await h.fill("#f-new_password", "nuova-password-1");
  await h.fill("#f-confirm_password", "nuova-password-1");
  await h.click("button:has-text('Attiva la casella')");
  await h.getByText("Casella attivata.").waitFor();

  step = "holder: change the recovery e-mail";
  await h.fill("#f-reference_email", "non-un-indirizzo");
  await h.click("button:has-text('Salva')");
  await h.getByText("Indirizzo e-mail non valido.").waitFor();
  await h.fill("#f-reference_email", "marco.nuovo@example.test");
  await h.click("button:has-text('Salva')");
  await h.getByText("E-mail di riferimento aggiornata.").waitFor();
  assert.equal((await h.textContent("#reference-email")).trim(), "marco.nuovo@example.test");
  await shot(h, "07-area-titolare");

  step = "holder: change the password (a wrong current one is named)";
  await h.fill("#f-current_password", "non-questa");
  await h.fill("#f-new_password", "nuova-password-2");
  await h.fill("#f-confirm_password", "nuova-password-2");
  await h.click("button:has-text('Cambia la password')");
  assert.equal((await h.textContent("#e-current_password")).trim(), "La password attuale non è corretta.");
  await h.fill("#f-current_password", "nuova-password-1");
  await h.fill("#f-new_password", "nuova-password-2");
  await h.fill("#f-confirm_password", "nuova-password-2");
  await h.click("button:has-text('Cambia la password')");
  await h.getByText("Password cambiata.").waitFor();

  step = "holder: request the Avanzata plan, download the contract";
  await h.selectOption("#f-kind", { label: "Passaggio al piano avanzata" });
  await h.click("button:has-text('Invia la richiesta')");
  await h.getByText("Richiesta registrata").waitFor();
  const [contract] = await Promise.all([h.waitForEvent("download"), h.click("text=Scarica il contratto")]);
  const text = fs.readFileSync(await contract.path(), "utf8");
  assert.match(text, /CONTRATTO DI SERVIZIO/);
  assert.ok(text.includes(box("marco.bruni")));

  step = "holder: the new password works, the temporary one does not";
  await h.click("button:has-text('Esci')");
  await h.waitForURL(`${base}/casella/login`);
  await h.fill("#f-indirizzo", box("marco.bruni"));
  await h.fill("#f-password", marcoPw);
  await h.click("button:has-text('Accedi')");
  await h.getByText("Credenziali non valide.").waitFor();
  await h.fill("#f-password", "nuova-password-2");
  await h.click("button:has-text('Accedi')");
  await h.waitForURL(`${base}/casella`);

  step = "holder: a password changed in one session ends the others";
  const ctxH2 = await browser.newContext();
  const h2 = await ctxH2.newPage();
  await h2.goto(`${base}/casella/login`);
  await h2.fill("#f-indirizzo", box("marco.bruni"));
  await h2.fill("#f-password", "nuova-password-2");
  await h2.click("button:has-text('Accedi')");
  await h2.waitForURL(`${base}/casella`);
  await h.fill("#f-current_password", "nuova-password-2");
  await h.fill("#f-new_password", "nuova-password-3");
  await h.fill("#f-confirm_password", "nuova-password-3");
  await h.click("button:has-text('Cambia la password')");
  await h.getByText("Password cambiata.").waitFor();
  await h.goto(`${base}/casella`);
  await h.waitForURL(`${base}/casella`);
  await h2.goto(`${base}/casella`);
  await h2.waitForURL(`${base}/casella/login`);
  await ctxH2.close();

  step = "order A sees the holder's request on the dashboard and fulfils it";
  await a.goto(`${base}/ordine`);
  await a.getByText("passaggio al piano avanzata").waitFor();
  await a.goto(detailUrl(box("marco.bruni")));
  assert.match(await a.textContent("#downgrade"), /resta sul piano base/);
  await a.selectOption("#f-plan", "base");
  await a.fill("#f-addons", "9");
  await a.click("button:has-text('Cambia il piano')");
  assert.match(await a.textContent("#e-addons"), /Troppe estensioni/);
  await a.selectOption("#f-plan", "avanzata");
  await a.fill("#f-addons", "2");
  await a.click("button:has-text('Cambia il piano')");
  await a.getByText("Piano aggiornato: avanzata con 2 estensioni.").waitFor();
  assert.match(await a.textContent("#downgrade"), /passa dal piano avanzata al piano base/, "the downgrade plan");

  // ---------------------------------------------------------- phone width
  step = "phone width: no horizontal scrolling";
  const ctxP = await browser.newContext({ viewport: { width: 375, height: 800 } });
  const p = await ctxP.newPage();
  await orderLogin(p, E.ORDER_A, E.ORDER_A_PW);
  await shot(p, "08-cruscotto-telefono");
  for (const url of ["/ordine", "/ordine/caselle", detailUrl(box("marco.bruni")).slice(base.length)]) {
    await p.goto(base + url);
    const w = await p.evaluate(() => document.documentElement.scrollWidth);
    assert.ok(w <= 376, `${url} is ${w}px wide at 375px`);
  }

  // ------------------------------------------- throttling (last: it locks)
  step = "repeated wrong logins are throttled";
  const ctxT = await browser.newContext();
  const t = await ctxT.newPage();
  let status = 0;
  for (let i = 0; i < 6; i++) {
    await t.goto(`${base}/ordine/login`);
    await t.fill("#f-ordine", E.ORDER_B);
    await t.fill("#f-password", `sbagliata-${i}`);
    const [resp] = await Promise.all([t.waitForNavigation(), t.click("button:has-text('Accedi')")]);
    status = resp.status();
  }
  assert.equal(status, 429);
  await t.getByText("Troppi tentativi").waitFor();

  console.log("browser test passed");
} catch (e) {
  console.error(`FAILED at step: ${step}`);
  console.error(e);
  process.exitCode = 1;
} finally {
  await browser.close();
}
