"""Drive a real Thunderbird (Debian's, under xvfb-run) against hermod through Marionette.

1. Fetch hermod's autoconfig document and check what it announces (IMAP and submission with
   STARTTLS on hermod's ports, the whole address as login).
2. Start the IMAP tap (imap_tap.py) on the announced IMAP port of 127.0.0.1; hermod's IMAP
   listener is on the same port of 127.0.0.2, so Thunderbird uses the announced values as
   they are and the tap records hermod's side of every IMAP connection.
3. Start Thunderbird with a fresh profile and HOME, all background network off, and in its
   chrome context: trust hermod's self-signed certificate, let Thunderbird's own account
   set-up code fetch and read the autoconfig from hermod (the ISPDB URL points at hermod),
   create the account from it (the STARTTLS entries), list the folders, open a message,
   delete another (to Trash), send one through submission and wait for its copy in Sent.

Prints one `step ...` line per finished step; exits non-zero with the failing step.
Usage: thunderbird_flow.py JSON (see main()). Standard library only.
"""

import base64
import json
import os
import signal
import socket
import ssl
import subprocess
import sys
import time
import urllib.request
import xml.etree.ElementTree as ET

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from imap_tap import ImapTap  # noqa: E402
from marionette import Marionette  # noqa: E402


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def fetch_autoconfig(http_port, email):
    url = f"http://127.0.0.1:{http_port}/mail/config-v1.1.xml?emailaddress={email}"
    with urllib.request.urlopen(url, timeout=10) as r:
        return r.read().decode()


def check_autoconfig(xml, args):
    """The STARTTLS entries of the document, checked against what hermod listens on."""
    root = ET.fromstring(xml)
    provider = root.find("emailProvider")
    assert provider is not None, xml
    found = {}
    for element, kind in (("incomingServer", "imap"), ("outgoingServer", "smtp")):
        for server in provider.findall(element):
            if (
                server.get("type") == kind
                and server.findtext("socketType") == "STARTTLS"
            ):
                found[kind] = {
                    "hostname": server.findtext("hostname"),
                    "port": int(server.findtext("port")),
                    "username": server.findtext("username"),
                    "authentication": server.findtext("authentication"),
                }
    for kind, port in (("imap", args["imap_port"]), ("smtp", args["submission_port"])):
        entry = found.get(kind)
        assert entry, f"autoconfig has no {kind} STARTTLS server:\n{xml}"
        assert entry["port"] == port, f"{kind} port {entry['port']} != {port}:\n{xml}"
        assert entry["hostname"] == "localhost", f"{kind} host:\n{xml}"
        assert entry["username"] == "%EMAILADDRESS%", f"{kind} username:\n{xml}"
        assert entry["authentication"] == "password-cleartext", xml
    return found


def write_prefs(profile, marionette_port, http_port, email):
    """A fresh profile that talks to loopback only and skips every first-run dialog."""
    autoconfig = (
        f"http://127.0.0.1:{http_port}/mail/config-v1.1.xml?emailaddress={email}"
        "&domain={{domain}}"
    )
    prefs = {
        "marionette.port": marionette_port,
        # Account set-up: only hermod's document, nothing from Mozilla or DNS.
        "mailnews.auto_config_url": autoconfig,
        "mailnews.auto_config.fetchFromISP.enabled": False,
        "mailnews.auto_config.guess.enabled": False,
        "mail.provider.suppress_dialog_on_startup": True,
        "mail.provider.enabled": False,
        "mail.shell.checkDefaultClient": False,
        "mailnews.start_page.enabled": False,
        "mail.rights.override": True,
        "mail.spotlight.firstRunDone": True,
        "mail.winsearch.firstRunDone": True,
        # Background network off: updates, telemetry, add-ons, remote settings, captive
        # portal and connectivity probes, safe browsing, prefetching.
        "app.update.enabled": False,
        "app.update.auto": False,
        "app.update.checkInstallTime": False,
        "app.normandy.enabled": False,
        "datareporting.policy.dataSubmissionEnabled": False,
        "datareporting.healthreport.uploadEnabled": False,
        "toolkit.telemetry.enabled": False,
        "toolkit.telemetry.unified": False,
        "toolkit.telemetry.server": "",
        "toolkit.telemetry.archive.enabled": False,
        "extensions.update.enabled": False,
        "extensions.getAddons.cache.enabled": False,
        "extensions.blocklist.enabled": False,
        "extensions.systemAddon.update.enabled": False,
        "services.settings.server": "http://127.0.0.1:9/",
        "network.captive-portal-service.enabled": False,
        "network.connectivity-service.enabled": False,
        "network.prefetch-next": False,
        "network.dns.disablePrefetch": True,
        "network.predictor.enabled": False,
        "browser.safebrowsing.malware.enabled": False,
        "browser.safebrowsing.phishing.enabled": False,
        "browser.safebrowsing.downloads.enabled": False,
        "browser.safebrowsing.provider.mozilla.updateURL": "",
        "geo.enabled": False,
        "mailnews.headers.showSender": True,
        "calendar.timezone.useSystemTimezone": True,
        # Anything over HTTP(S) that is not loopback goes to a dead loopback proxy.
        "network.proxy.type": 1,
        "network.proxy.http": "127.0.0.1",
        "network.proxy.http_port": 9,
        "network.proxy.ssl": "127.0.0.1",
        "network.proxy.ssl_port": 9,
        "network.proxy.share_proxy_settings": True,
        "network.proxy.no_proxies_on": "localhost, 127.0.0.1",
        "network.proxy.allow_hijacking_localhost": False,
        # Messages are not marked read behind the test's back, no "mark as junk" prompts.
        "mailnews.mark_message_read.auto": True,
        "mail.spam.manualMark": False,
    }
    with open(os.path.join(profile, "user.js"), "w", encoding="utf-8") as f:
        for key, value in prefs.items():
            f.write(f"user_pref({json.dumps(key)}, {json.dumps(value)});\n")


# Chrome-context helpers shared by the steps.
PRELUDE = """
const { MailServices } = ChromeUtils.importESModule("resource:///modules/MailServices.sys.mjs");
// The text of an open alert/prompt window (Thunderbird reports errors such as a failed copy
// to Sent that way), or "".
const openDialog = async () => {
  for (const w of Services.wm.getEnumerator(null)) {
    if (w.document?.documentURI == "chrome://global/content/commonDialog.xhtml") {
      // The text is filled in just after the window opens.
      for (let i = 0; i < 20; i++) {
        const text = w.document.getElementById("infoBody")?.textContent;
        if (text) return text;
        await new Promise(r => setTimeout(r, 100));
      }
      return "(a dialog without text)";
    }
  }
  return "";
};
const until = async (what, check, ms) => {
  const deadline = Date.now() + ms;
  for (;;) {
    const value = await check();
    if (value) return value;
    const dialog = await openDialog();
    if (dialog) throw new Error("Thunderbird shows a dialog while waiting for " + what + ": " + dialog);
    if (Date.now() > deadline) throw new Error("timed out waiting for " + what);
    await new Promise(r => setTimeout(r, 250));
  }
};
const win = Services.wm.getMostRecentWindow("mail:3pane");
const about3Pane = win.document.getElementById("tabmail").currentAbout3Pane;
"""

CREATE_ACCOUNT = """
const [certBase64, email, password, ports] = args;
const { FetchConfig } = ChromeUtils.importESModule(
  "resource:///modules/accountcreation/FetchConfig.sys.mjs");
const { AccountConfig } = ChromeUtils.importESModule(
  "resource:///modules/accountcreation/AccountConfig.sys.mjs");
const { CreateInBackend } = ChromeUtils.importESModule(
  "resource:///modules/accountcreation/CreateInBackend.sys.mjs");
// hermod's self-signed certificate, accepted for its IMAP and submission ports in this
// profile only (what the user does in the "add security exception" dialog).
const cert = Cc["@mozilla.org/security/x509certdb;1"].getService(Ci.nsIX509CertDB)
  .constructX509FromBase64(certBase64);
const overrides = Cc["@mozilla.org/security/certoverride;1"]
  .getService(Ci.nsICertOverrideService);
for (const port of ports) overrides.rememberValidityOverride("localhost", port, {}, cert, false);
// Thunderbird's own fetch and reading of the autoconfig document (the ISPDB URL of the
// profile points at hermod).
const config = await FetchConfig.fromDB(email.split("@")[1], new AbortController().signal);
const starttls = (first, others, type) => [first, ...(others || [])].find(
  s => s.type == type && s.socketType == Ci.nsMsgSocketType.alwaysSTARTTLS);
const incoming = starttls(config.incoming, config.incomingAlternatives, "imap");
const outgoing = starttls(config.outgoing, config.outgoingAlternatives, "smtp");
if (!incoming || !outgoing) {
  throw new Error("autoconfig read by Thunderbird has no STARTTLS IMAP/SMTP: " +
    JSON.stringify(config));
}
config.incoming = incoming;
config.outgoing = outgoing;
config.incomingAlternatives = [];
config.outgoingAlternatives = [];
config.outgoing.addThisServer = true;
config.outgoing.useGlobalPreferredServer = false;
config.outgoing.existingServerKey = null;
AccountConfig.replaceVariables(config, "Alice Tester", email, password);
config.rememberPassword = true;
const account = await CreateInBackend.createAccountInBackend(config);
const describe = s => ({ host: s.hostname, port: s.port, socketType: s.socketType,
  username: s.username, auth: s.auth });
return { key: account.key, source: config.source, incoming: describe(config.incoming),
  outgoing: describe(config.outgoing) };
"""

LIST_FOLDERS = """
const [key, folders, inboxCount] = args;
const server = MailServices.accounts.getAccount(key).incomingServer;
const root = server.rootFolder;
server.getNewMessages(root, win.msgWindow, null);
const inbox = await until("INBOX", () => root.getFolderWithFlags(Ci.nsMsgFolderFlags.Inbox),
  60000);
about3Pane.displayFolder(inbox.URI);
await until("folders " + folders, () => folders.every(
  n => root.subFolders.some(f => f.name == n)), 60000);
await until(inboxCount + " messages in the INBOX view",
  () => about3Pane.gDBView && about3Pane.gDBView.rowCount == inboxCount, 60000);
return { folders: root.subFolders.map(f => f.name), inbox: about3Pane.gDBView.rowCount };
"""

SELECT_BY_SUBJECT = """
const row = subject => {
  const view = about3Pane.gDBView;
  for (let i = 0; i < view.rowCount; i++) {
    if (view.getMsgHdrAt(i).mime2DecodedSubject == subject) return i;
  }
  return -1;
};
const select = async subject => {
  const i = await until("row of " + subject, () => { const r = row(subject); return r >= 0 ? r + 1 : 0; }, 30000) - 1;
  about3Pane.threadTree.selectedIndex = i;
  await until("selection of " + subject,
    () => about3Pane.gDBView.hdrForFirstSelectedMessage?.mime2DecodedSubject == subject, 10000);
  return i;
};
"""

OPEN_MESSAGE = (
    SELECT_BY_SUBJECT
    + """
const [subject, text] = args;
await select(subject);
const aboutMessage = about3Pane.messageBrowser.contentWindow;
const shown = await until("display of " + subject, () => {
  const body = aboutMessage.getMessagePaneBrowser()?.contentDocument?.body;
  return body && body.textContent.includes(text) ? body.textContent : "";
}, 60000);
return { subject, shown: shown.trim().slice(0, 200) };
"""
)

DELETE_MESSAGE = (
    SELECT_BY_SUBJECT
    + """
const [key, subject] = args;
const root = MailServices.accounts.getAccount(key).incomingServer.rootFolder;
const trash = root.getFolderWithFlags(Ci.nsMsgFolderFlags.Trash);
if (!trash) throw new Error("no Trash folder known to Thunderbird");
await select(subject);
about3Pane.commandController.doCommand("cmd_deleteMessage");
await until(subject + " gone from the INBOX view", () => row(subject) < 0, 30000);
const inTrash = () => {
  for (const hdr of trash.messages) if (hdr.mime2DecodedSubject == subject) return true;
  return false;
};
await until(subject + " in Trash", () => { trash.updateFolder(win.msgWindow); return inTrash(); },
  60000);
return { trash: trash.name };
"""
)

SEND_MESSAGE = """
const [key, to, subject, body] = args;
const account = MailServices.accounts.getAccount(key);
const identity = account.defaultIdentity;
const fields = Cc["@mozilla.org/messengercompose/composefields;1"]
  .createInstance(Ci.nsIMsgCompFields);
fields.from = identity.email;
fields.to = to;
fields.subject = subject;
fields.body = body + "\\r\\n";
fields.forcePlainText = true;
const params = Cc["@mozilla.org/messengercompose/composeparams;1"]
  .createInstance(Ci.nsIMsgComposeParams);
params.composeFields = fields;
params.identity = identity;
params.type = Ci.nsIMsgCompType.New;
params.format = Ci.nsIMsgCompFormat.PlainText;
const compose = MailServices.compose.initCompose(params);
const progress = Cc["@mozilla.org/messenger/progress;1"].createInstance(Ci.nsIMsgProgress);
let state = "sending";
progress.registerListener({
  onStateChange(webProgress, request, flags, status) {
    if (flags & Ci.nsIWebProgressListener.STATE_STOP) state = status == 0 ? "done" : "failed " + status;
  },
  onProgressChange() {}, onLocationChange() {}, onStatusChange() {}, onSecurityChange() {},
  onContentBlockingEvent() {},
  QueryInterface: ChromeUtils.generateQI(["nsIWebProgressListener", "nsISupportsWeakReference"]),
});
progress.msgWindow = win.msgWindow;
await compose.sendMsg(Ci.nsIMsgCompDeliverMode.Now, identity, account.key, progress);
await until("send to finish", () => state != "sending", 60000);
if (state != "done") throw new Error("send " + state);
const sent = account.incomingServer.rootFolder.getFolderWithFlags(Ci.nsMsgFolderFlags.SentMail);
if (!sent) throw new Error("no Sent folder known to Thunderbird");
const inSent = () => {
  for (const hdr of sent.messages) if (hdr.mime2DecodedSubject == subject) return true;
  return false;
};
await until("copy of " + subject + " in " + sent.name,
  () => { sent.updateFolder(win.msgWindow); return inSent(); }, 60000);
return { sent: sent.name, fcc: identity.fccFolderURI };
"""


def main():
    """argv[1] is a JSON object: http_port, imap_port, imap_backend, submission_port, email,
    password, cert, work, trace, folders, inbox_count, open_subject, open_text,
    delete_subject, send_subject, send_body."""
    args = json.loads(sys.argv[1])
    xml = fetch_autoconfig(args["http_port"], args["email"])
    found = check_autoconfig(xml, args)
    print(f"step autoconfig {json.dumps(found)}", flush=True)

    tap = ImapTap(
        ("127.0.0.1", args["imap_port"]),
        (args["imap_backend"], args["imap_port"]),
        args["cert"],
        args["key"],
        args["trace"],
    )
    work = args["work"]
    profile = os.path.join(work, "profile")
    home = os.path.join(work, "home")
    os.makedirs(profile)
    os.makedirs(home)
    marionette_port = free_port()
    write_prefs(profile, marionette_port, args["http_port"], args["email"])
    env = dict(os.environ, HOME=home, TMPDIR=work, MOZ_CRASHREPORTER_DISABLE="1")
    env.pop("DISPLAY", None)
    env.pop("WAYLAND_DISPLAY", None)
    log = open(os.path.join(work, "thunderbird.log"), "wb")
    tb = subprocess.Popen(
        [
            "xvfb-run", "-a", "-s", "-screen 0 1280x1024x24",
            "thunderbird", "--marionette", "-remote-allow-system-access",
            "--no-remote", "--profile", profile,
        ],
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    step = "start"
    try:
        m = Marionette(marionette_port)
        m.start_chrome_session(180_000)
        with open(args["cert"], encoding="ascii") as f:
            der = ssl.PEM_cert_to_DER_cert(f.read())
        step = "account"
        account = m.script(
            PRELUDE + CREATE_ACCOUNT,
            base64.b64encode(der).decode(),
            args["email"],
            args["password"],
            [args["imap_port"], args["submission_port"]],
        )
        print(f"step account {json.dumps(account)}", flush=True)
        step = "folders"
        r = m.script(PRELUDE + LIST_FOLDERS, account["key"], args["folders"], args["inbox_count"])
        print(f"step folders {json.dumps(r)}", flush=True)
        step = "open"
        r = m.script(PRELUDE + OPEN_MESSAGE, args["open_subject"], args["open_text"])
        print(f"step open {json.dumps(r)}", flush=True)
        step = "delete"
        r = m.script(PRELUDE + DELETE_MESSAGE, account["key"], args["delete_subject"])
        print(f"step delete {json.dumps(r)}", flush=True)
        step = "send"
        r = m.script(
            PRELUDE + SEND_MESSAGE,
            account["key"],
            args["email"],
            args["send_subject"],
            args["send_body"],
        )
        print(f"step send {json.dumps(r, ensure_ascii=False)}", flush=True)
    except Exception as e:  # noqa: BLE001 - report the failing step, then fail
        print(f"failed at step {step}: {e}", flush=True)
        sys.exit(1)
    finally:
        try:
            os.killpg(tb.pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
        try:
            tb.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(tb.pid, signal.SIGKILL)
            tb.wait()
        tap.close()
        log.close()
    print("thunderbird ok", flush=True)


if __name__ == "__main__":
    main()
