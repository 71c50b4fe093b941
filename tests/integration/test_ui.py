"""SPEC section 12: the /ui page, driven in headless Chromium (Debian's
chromium and chromium-driver, through python3-selenium; scripts/deps.sh
installs them). Real events go through the real service and the fakes; the
browser signs in with the admin token, finds an event by e-mail, opens its
story, replays a dead one, and opens every other view. With
NCGHL_UI_SCREENSHOTS=1 (scripts/ui-screenshots.sh) each view's screenshot is
written to docs/ui/ for the README; otherwise to the test's temporary
directory."""
import os
import sys

try:
    import selenium  # noqa: F401
except ImportError:
    # Debian's python3-selenium lives in the system Python's dist-packages;
    # a python3 from elsewhere (pyenv, a venv) does not see it.
    if os.path.exists("/usr/bin/python3") and os.path.realpath(sys.executable) != \
            os.path.realpath("/usr/bin/python3"):
        os.execv("/usr/bin/python3", ["/usr/bin/python3"] + sys.argv)
    sys.stderr.write("test_ui: python3-selenium is missing: run scripts/deps.sh\n")
    raise

import json
import pathlib
import shutil
import signal
import sqlite3
import tempfile
import time
import urllib.parse

from selenium import webdriver
from selenium.common.exceptions import StaleElementReferenceException, TimeoutException
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import WebDriverWait

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402
from harness import IntegTest, insured_data, nowcerts_event, uniq, wait_until  # noqa: E402

CREATE_CONTACT = r"^/contacts/?$"
UI_FILES = harness.ROOT / "ui"
BROWSER_WAIT = 20  # seconds; only when to give up waiting


def phone():
    """A Tampa number no other test uses, as a NowCerts agent types it."""
    return "813%07d" % (int(uniq(6), 16) % 10000000)


def chromium_paths():
    for browser in ("/usr/bin/chromium", "/usr/bin/chromium-browser"):
        if os.path.exists(browser):
            break
    driver = shutil.which("chromedriver") or "/usr/bin/chromedriver"
    return browser, driver


class Browser:
    """One headless Chromium with a fresh profile."""

    def __init__(self):
        self.profile = tempfile.mkdtemp(prefix="ncghl-ui-chrome-")
        browser, driver = chromium_paths()
        o = webdriver.ChromeOptions()
        o.binary_location = browser
        for a in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                  "--no-first-run", "--disable-background-networking",
                  "--disable-component-update", "--disable-sync", "--hide-scrollbars",
                  "--force-device-scale-factor=1", "--user-data-dir=" + self.profile,
                  "--window-size=1280,900"):
            o.add_argument(a)
        o.set_capability("goog:loggingPrefs", {"browser": "ALL"})
        self.d = webdriver.Chrome(service=Service(driver), options=o)
        self.d.set_page_load_timeout(BROWSER_WAIT)

    def close(self):
        try:
            self.d.quit()
        finally:
            shutil.rmtree(self.profile, ignore_errors=True)


class UIFiles(IntegTest):
    """The page's files over HTTP: served only with ADMIN_TOKEN, with the
    right types, nothing outside ui/, nothing from elsewhere."""

    def test_files_types_and_paths(self):
        s = self.server({"ADMIN_TOKEN": "tok-" + uniq()})
        for path, ctype in (("/ui", "text/html"), ("/ui/", "text/html"),
                            ("/ui/index.html", "text/html"), ("/ui/app.js", "text/javascript"),
                            ("/ui/app.css", "text/css"), ("/ui/favicon.svg", "image/svg+xml")):
            with self.subTest(path=path):
                r = s.get(path)
                self.assertEqual(r.status, 200, r)
                self.assertTrue(r.content_type.startswith(ctype), r.content_type)
                csp = r.headers.get("content-security-policy", "")
                self.assertIn("default-src 'self'", csp)
                self.assertEqual(r.headers.get("x-content-type-options"), "nosniff")
        self.assertEqual(s.get("/ui").body, (UI_FILES / "index.html").read_bytes())
        for path in ("/ui/../src/main.c", "/ui/%2e%2e/README.md", "/ui/..", "/ui/.hidden.js",
                     "/ui/nope.js", "/ui/sub/app.js", "/ui/app.c", "/ui/README"):
            with self.subTest(path=path):
                self.assertJSONAnswer(s.get(path), 404)
        self.assertJSONAnswer(s.request("POST", "/ui/app.js", {}), 405)
        self.assertIn("web page: http://127.0.0.1:%d/ui" % s.port, s.log_text())
        # The same files, and the routes the page reads, are 404 without
        # ADMIN_TOKEN, like every admin route.
        s.stop()
        off = self.server({"ADMIN_TOKEN": None})
        for path in ("/ui", "/ui/", "/ui/index.html", "/ui/app.js", "/api/v1/overview",
                     "/api/v1/reloads", "/api/v1/backfill", "/api/v1/conflicts",
                     "/api/v1/timeline?nowcerts_id=x"):
            with self.subTest(path=path, admin_token=None):
                self.assertJSONAnswer(off.get(path, {"Authorization": "Bearer x"}), 404)
        self.assertNotIn("web page: http://127.0.0.1:%d/ui" % off.port, off.log_text())

    def test_nothing_is_loaded_from_outside(self):
        names = sorted(f.name for f in UI_FILES.iterdir())
        for name in ("index.html", "app.js", "app.css"):
            self.assertIn(name, names)
        for f in sorted(UI_FILES.iterdir()):
            # An XML namespace is a name, never fetched.
            text = f.read_text(encoding="utf-8").replace('xmlns="http://www.w3.org/2000/svg"', "")
            for marker in ("http://", "https://", "//cdn", "@import", "fonts.g"):
                self.assertNotIn(marker, text, "%s names an outside resource" % f.name)

    def test_admin_routes_for_the_page(self):
        token = "tok-" + uniq()
        s = self.server({"ADMIN_TOKEN": token})
        auth = {"Authorization": "Bearer " + token}
        for path in ("/api/v1/overview", "/api/v1/reloads", "/api/v1/backfill"):
            with self.subTest(path=path):
                self.assertJSONAnswer(s.get(path), 401)
                self.assertJSONAnswer(s.request("POST", path, {}, auth), 405)
        email = "filter.%s@example.com" % uniq()
        first = "Zelda" + uniq(4)
        ids = [self.assertJSONAnswer(s.nowcerts(nowcerts_event("FOO_BAR", {"n": i})), 200)["event_id"]
               for i in range(5)]
        mine = self.assertJSONAnswer(s.nowcerts(nowcerts_event(
            "INSURED_INSERT", insured_data(email=email, first=first, last="Quist"))), 200)["event_id"]
        # A person: by e-mail (any case), by the start of a name, by two words.
        for q in (email, email.upper(), first[:5].lower(), first + " quis"):
            with self.subTest(q=q):
                got = self.assertJSONAnswer(s.get("/api/v1/events?" + urllib.parse.urlencode({"q": q}), auth), 200)
                self.assertEqual([e["id"] for e in got], [mine])
                self.assertIn(email, got[0]["people"])
        self.assertEqual(self.assertJSONAnswer(
            s.get("/api/v1/events?q=" + first + "%20nobody", auth), 200), [])
        got = self.assertJSONAnswer(s.get("/api/v1/events?type=FOO_BAR&source=nowcerts", auth), 200)
        self.assertEqual({e["id"] for e in got}, set(ids))
        self.assertEqual(self.assertJSONAnswer(s.get("/api/v1/events?source=ghl", auth), 200), [])
        # Paging: two at a time, every event once, newest first.
        seen, before = [], None
        while True:
            r = s.get("/api/v1/events?type=FOO_BAR&limit=2" +
                      ("&" + urllib.parse.urlencode({"before": before}) if before else ""), auth)
            page = self.assertJSONAnswer(r, 200)
            seen += [e["id"] for e in page]
            before = r.headers.get("x-next-before")
            if not before:
                break
            self.assertEqual(len(page), 2)
        self.assertEqual(sorted(seen), sorted(ids))
        self.assertEqual(len(seen), len(set(seen)))
        whole = [e["id"] for e in self.assertJSONAnswer(s.get("/api/v1/events?type=FOO_BAR", auth), 200)]
        self.assertEqual(seen, whole)
        for q in ("before=nonsense", "before=12,", "q=", "type=" + "x" * 101, "source=" + "y" * 16,
                  "status=gone"):
            with self.subTest(query=q):
                if q == "q=":
                    self.assertJSONAnswer(s.get("/api/v1/events?" + q, auth), 200)
                else:
                    self.assert422(s.get("/api/v1/events?" + q, auth))
        # The story: people noted, each attempt's request and answer.
        story = self.assertJSONAnswer(s.get("/api/v1/events/" + mine, auth), 200)
        self.assertIn(email, story["people"])
        self.assertIn(first.lower(), story["people"])
        posts = [a for a in story["attempts"] if a["method"] == "POST" and a["status"] == 201]
        self.assertTrue(posts, story["attempts"])
        # Personal data in the bodies is masked as in the log (LOG_PII off).
        self.assertNotEqual(posts[-1]["request"].get("email"), email)
        self.assertIn("***", posts[-1]["request"].get("email"))
        self.assertNotIn(email, json.dumps(story["attempts"]))
        self.assertTrue(posts[-1]["answer"]["contact"]["id"])
        # The overview, reloads (one at start, one per SIGHUP), no backfill.
        ov = self.assertJSONAnswer(s.get("/api/v1/overview", auth), 200)
        self.assertEqual(ov["events"]["done"], 6)
        self.assertEqual(ov["received"]["minute"], 6)
        rl = self.assertJSONAnswer(s.get("/api/v1/reloads", auth), 200)
        self.assertEqual([x["result"] for x in rl["reloads"]], ["ok"])
        self.assertEqual(rl["reloads"][0]["version"], rl["version"])
        s.proc.send_signal(signal.SIGHUP)
        harness.wait_until(lambda: len(s.get("/api/v1/reloads", auth).json()["reloads"]) == 2,
                           what="the reload recorded")
        self.assertEqual(self.assertJSONAnswer(s.get("/api/v1/backfill", auth), 200),
                         {"backfills": []})
        s.stop()
        s2 = self.server({"ADMIN_TOKEN": token, "LOG_PII": "true"})
        raw = self.assertJSONAnswer(s2.nowcerts(nowcerts_event(
            "INSURED_INSERT", insured_data(email="pii." + email))), 200)["event_id"]
        story = self.assertJSONAnswer(s2.get("/api/v1/events/" + raw, auth), 200)
        self.assertIn("pii." + email, [a["request"].get("email") for a in story["attempts"]
                                        if isinstance(a["request"], dict)])
        doc = self.assertJSONAnswer(s2.get("/openapi.json"), 200)
        paths = doc["paths"]
        for path in ("/api/v1/overview", "/api/v1/reloads", "/api/v1/backfill", "/ui",
                     "/api/v1/conflicts", "/api/v1/timeline"):
            self.assertIn("get", paths.get(path, {}), path)
        def param(p):  # a parameter, or the shared one it refers to
            ref = p.get("$ref", "")
            return doc["components"]["parameters"][ref.rsplit("/", 1)[1]] if ref else p
        names = {param(p)["name"] for p in paths["/api/v1/events"]["get"]["parameters"]}
        self.assertTrue({"status", "source", "type", "q", "before", "limit", "tenant"} <= names,
                        names)


class UIBrowser(IntegTest):
    """The page itself, in a real browser."""

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.browser = Browser()

    @classmethod
    def tearDownClass(cls):
        cls.browser.close()
        super().tearDownClass()

    def setUp(self):
        super().setUp()
        self.d = self.browser.d
        want = os.environ.get("NCGHL_UI_SCREENSHOTS") == "1"
        self.shots = harness.ROOT / "docs" / "ui" if want else pathlib.Path(self.tmp)
        self.shots.mkdir(parents=True, exist_ok=True)
        self.d.set_window_size(1280, 900)
        # A page left open by the test before keeps polling its stopped
        # server: leave it, and drop what the console said meanwhile.
        self.d.get("about:blank")
        self.d.get_log("browser")

    # ---- helpers ----

    def wait(self, cond, what):
        try:
            # The page redraws what it follows (a replayed event's badge):
            # an element read mid-redraw is simply read again.
            return WebDriverWait(self.d, BROWSER_WAIT, poll_frequency=0.1,
                                 ignored_exceptions=(StaleElementReferenceException,)).until(
                lambda d: cond(d), message=what)
        except TimeoutException:
            self.fail("browser: gave up waiting for %s; page text:\n%s\nconsole:\n%s" % (
                what, self.d.find_element(By.TAG_NAME, "body").text[:2000], self.console()))

    def console(self):
        try:
            return "\n".join(str(e) for e in self.d.get_log("browser"))
        except Exception:  # the log is a help for failures only
            return ""

    def css(self, sel):
        return self.d.find_elements(By.CSS_SELECTOR, sel)

    def visible(self, sel):
        return [e for e in self.css(sel) if e.is_displayed()]

    def h1(self, text):
        self.wait(lambda d: any(e.text == text for e in self.visible("main h1")), "heading %r" % text)

    def shot(self, name, full=False):
        """A screenshot of the view; full: the whole page, not the window."""
        self.d.execute_script("window.scrollTo(0, 0)")
        size = self.d.get_window_size()
        if full:
            height = self.d.execute_script("return document.documentElement.scrollHeight")
            self.d.set_window_size(size["width"], min(max(height, size["height"]), 4000))
        self.d.save_screenshot(str(self.shots / (name + ".png")))
        if full:
            self.d.set_window_size(size["width"], size["height"])

    def no_sideways_scroll(self):
        w = self.d.execute_script(
            "return [document.documentElement.scrollWidth, window.innerWidth]")
        self.assertLessEqual(w[0], w[1], "the page scrolls sideways at %d px" % w[1])

    def sign_in(self, s, token):
        self.d.get(s.base + "/ui")
        self.d.execute_script("sessionStorage.clear()")
        self.d.get(s.base + "/ui/#/")
        self.wait(lambda d: self.visible("#token"), "the sign-in form")

    # ---- the walk through ----

    def test_walkthrough(self):
        token = "ui-" + uniq(20)
        s = self.server({"ADMIN_TOKEN": token})
        auth = {"Authorization": "Bearer " + token}
        tag = uniq(6)
        # One event that ends dead: GHL refuses the contact once.
        self.fakes.fault("ghl", status=400, count=1, path=CREATE_CONTACT, method="POST")
        dead_data = insured_data(email="dead.%s@example.com" % tag, first="Dora", last="Dead" + tag)
        dead = self.assertJSONAnswer(s.nowcerts(nowcerts_event("INSURED_INSERT", dead_data)), 502)["event_id"]
        # One to find by e-mail, with a NowCerts id so a link is made.
        nc_id = "5e1f0c2a-0000-4000-8000-%012x" % int(uniq(12), 16)
        email = "found.%s@example.com" % tag
        found = self.assertJSONAnswer(s.nowcerts(nowcerts_event("INSURED_INSERT", insured_data(
            email=email, first="Felicity", last="Found" + tag, id=nc_id))), 200)
        found_id, contact_id = found["event_id"], found["data"]["contact_id"]
        for i in range(3):
            self.assertJSONAnswer(s.nowcerts(nowcerts_event("INSURED_INSERT", insured_data())), 200)

        # Sign in: a wrong token is refused on the page, the right one kept
        # in sessionStorage only.
        self.sign_in(s, token)
        self.shot("login")
        self.css("#token")[0].send_keys("not-the-token")
        self.css("#login-submit")[0].click()
        self.wait(lambda d: self.visible("#login-error"), "the refusal")
        self.assertIn("not this service", self.css("#login-error")[0].text)
        self.css("#token")[0].clear()
        self.css("#token")[0].send_keys(token)
        self.css("#login-submit")[0].click()
        self.h1("Overview")
        self.assertEqual(self.d.execute_script("return sessionStorage.getItem('ncghl.adminToken')"), token)
        self.assertIsNone(self.d.execute_script("return localStorage.getItem('ncghl.adminToken')"))
        self.wait(lambda d: any(c.text.startswith("Dead\n1") for c in self.visible(".card")),
                  "the dead card counting 1")
        self.wait(lambda d: self.visible("#dead-count") and self.css("#dead-count")[0].text == "1",
                  "the dead count in the navigation")
        self.wait(lambda d: self.visible("#health") and self.css("#health")[0].text == "healthy",
                  "the service healthy")
        self.assertFalse(self.visible(".health-notice"))
        self.shot("overview")

        # Find an event by e-mail and open its story.
        self.css('#nav a[data-view="events"]')[0].click()
        self.h1("Events")
        self.wait(lambda d: len(self.css("tbody tr[data-id]")) == 5, "five events listed")
        self.shot("events")
        listed = [r.get_attribute("data-id") for r in self.css("tbody tr[data-id]")]
        # Two a page: "Older" walks the same five, in the same order.
        self.d.get(s.base + "/ui/#/events?limit=2")
        paged = []
        while True:
            self.wait(lambda d: (self.css("tbody tr[data-id]") and
                                 self.css("tbody tr[data-id]")[0].get_attribute("data-id") not in paged) or
                      (len(paged) == 5 and "No older events" in d.find_element(By.TAG_NAME, "main").text),
                      "the next page")
            paged += [r.get_attribute("data-id") for r in self.css("tbody tr[data-id]")]
            if not self.css("#older"):
                break
            self.css("#older")[0].click()
        self.assertEqual(paged, listed)
        self.css('#nav a[data-view="events"]')[0].click()
        self.wait(lambda d: len(self.css("tbody tr[data-id]")) == 5, "five events again")
        q = self.css("#f-q")[0]
        q.send_keys(email.upper())
        self.css(".filters button[type=submit]")[0].click()
        self.wait(lambda d: [r.get_attribute("data-id") for r in self.css("tbody tr[data-id]")] == [found_id],
                  "only the event with that e-mail")
        self.assertIn("q=", self.d.current_url)
        self.assertIn(email, self.css("tbody tr[data-id]")[0].text)  # whom it is about
        self.shot("events-search")
        self.css("tbody tr[data-id] a.event-link")[0].click()
        self.h1("INSURED_INSERT")
        self.wait(lambda d: found_id in self.css(".page-head .id")[0].text, "the story's event id")
        body = self.d.find_element(By.TAG_NAME, "main").text
        self.assertIn("Requests its mapping made", body)
        self.assertIn("/contacts/search", body)
        self.assertIn(email, body)  # the payload, and the people noted
        self.assertIn(contact_id, body)  # the link it touched
        self.assertIn(nc_id.lower(), body)
        self.assertEqual(self.css("#event-status .badge")[0].get_attribute("data-status"), "done")
        self.shot("story", full=True)

        # A person's timeline, from the story's link.
        self.css("a.timeline-link")[0].click()
        self.h1("Person timeline")
        self.wait(lambda d: "timeline?" in d.current_url, "the timeline's address")
        self.assertIn(contact_id, self.d.current_url)
        self.wait(lambda d: contact_id in d.find_element(By.TAG_NAME, "main").text, "the pair named")

        # Dead letters: the dead one, replayed, goes back to the queue and
        # ends done (GHL refused only once).
        self.css('#nav a[data-view="dead"]')[0].click()
        self.h1("Dead letters")
        self.wait(lambda d: [r.get_attribute("data-id") for r in self.css("tbody tr[data-id]")] == [dead],
                  "the dead event listed")
        self.assertIn("HTTP 400", self.d.find_element(By.TAG_NAME, "main").text)
        self.shot("dead")
        self.css("tbody tr[data-id] button.replay")[0].click()
        self.wait(lambda d: self.css("tbody tr[data-id] .badge")[0].get_attribute("data-status") == "done",
                  "the replayed event done")
        ev = s.event(dead)
        self.assertEqual(ev["status"], "done")
        self.assertEqual(int(ev["attempts"]), 2)
        contacts = [c for c in self.fakes.records("ghl", "contacts") if c.get("email") == dead_data["email"]]
        self.assertEqual(len(contacts), 1, contacts)
        self.d.refresh()
        self.h1("Dead letters")
        self.wait(lambda d: self.visible(".empty"), "the empty dead-letter list")
        self.assertIn("No dead letters", self.d.find_element(By.TAG_NAME, "main").text)

        # Conflicts.
        self.css('#nav a[data-view="conflicts"]')[0].click()
        self.h1("Conflicts")
        self.wait(lambda d: "No conflicts" in d.find_element(By.TAG_NAME, "main").text,
                  "the empty conflict list")

        # Mappings: the load at start, and a reload after SIGHUP.
        s.proc.send_signal(signal.SIGHUP)
        harness.wait_until(lambda: len(s.get("/api/v1/reloads", auth).json()["reloads"]) == 2,
                           what="the reload recorded")
        self.css('#nav a[data-view="mappings"]')[0].click()
        self.h1("Mappings")
        self.wait(lambda d: len(self.css("table.reloads tbody tr")) == 2, "two loads listed")
        self.assertIn("loaded at start", self.d.find_element(By.TAG_NAME, "main").text)
        self.shot("mappings")

        # Backfill: none, then one in progress. The resume point is the one
        # `ncghl backfill` keeps in the store while it runs (backfill.c).
        self.css('#nav a[data-view="backfill"]')[0].click()
        self.h1("Backfill")
        self.wait(lambda d: "No backfill in progress" in d.find_element(By.TAG_NAME, "main").text,
                  "no backfill")
        db = sqlite3.connect(s.env["DB_PATH"])
        with db:
            db.execute("INSERT INTO kv (key, value) VALUES (?, ?)", (
                "backfill.cursor.nowcerts",
                json.dumps({"since": "", "stage": 1, "pos": 200, "read": 1200, "queued": 1180})))
        db.close()
        self.wait(lambda d: self.visible("section.backfill"), "the backfill in progress")
        text = self.d.find_element(By.TAG_NAME, "main").text
        self.assertIn("policies", text)
        self.assertIn("1,200", text)
        self.shot("backfill")

        # On a phone: no sideways scrolling, the lists readable.
        self.d.set_window_size(390, 844)
        self.d.get(s.base + "/ui/#/events")
        self.h1("Events")
        self.wait(lambda d: len(self.css("tbody tr[data-id]")) == 5, "five events on a phone")
        self.no_sideways_scroll()
        self.shot("phone-events")
        self.d.get(s.base + "/ui/#/event/" + found_id)
        self.h1("INSURED_INSERT")
        self.no_sideways_scroll()
        self.shot("phone-story", full=True)

        # Everything the page loaded came from the service itself.
        origins = self.d.execute_script(
            "return performance.getEntriesByType('resource').map(function (e) { return e.name; })")
        self.assertTrue(origins)
        for url in origins:
            self.assertTrue(url.startswith(s.base + "/"), url)

        # Signing out forgets the token.
        self.d.set_window_size(1280, 900)
        self.css("#logout")[0].click()
        self.wait(lambda d: self.visible("#token"), "the sign-in form again")
        self.assertIsNone(self.d.execute_script("return sessionStorage.getItem('ncghl.adminToken')"))
        errors = [e for e in self.d.get_log("browser") if e.get("level") == "SEVERE"
                  and "favicon" not in e.get("message", "") and "401" not in e.get("message", "")]
        self.assertEqual(errors, [], "errors in the browser console")

    def test_a_failed_preflight_shows_on_the_overview(self):
        """ncghl doctor's checks at start (DOCTOR_AT_START) fail when the GHL
        location is not the token's: /health is degraded, and the page says
        why."""
        self.fakes.seed("ghl", "locations", {"id": "the-real-location", "name": "Agency"})
        token = "ui-" + uniq(20)
        s = self.server({"ADMIN_TOKEN": token, "DOCTOR_AT_START": "true"})
        wait_until(lambda: s.get("/health").json()["status"] == "degraded", 30, 0.1,
                   "/health degraded")
        reasons = s.get("/health").json()["reasons"]
        self.d.get(s.base + "/ui/")
        self.d.execute_script("sessionStorage.setItem('ncghl.adminToken', arguments[0])", token)
        self.d.get(s.base + "/ui/#/")
        self.h1("Overview")
        self.wait(lambda d: self.visible(".health-notice"), "the preflight notice")
        shown = [li.text for li in self.css(".health-notice li")]
        self.assertEqual(shown, reasons)
        self.assertEqual(self.css("#health")[0].text, "degraded")

    def test_the_tenant_selector_shows_one_tenants_events(self):
        """SPEC 13 with TENANTS_DIR: the page lists the tenants /health names,
        and the events it lists are the chosen tenant's only, also when the
        tab's storage lost the choice (cleared here before the token)."""
        self.fakes.config("ghl", locations=["loc-a", "loc-b"])
        tdir = self.tmp / "tenants.d"
        tdir.mkdir()
        for name in ("a", "b"):
            (tdir / (name + ".env")).write_text(
                "NOWCERTS_BASE_URL=%s/api\nGHL_BASE_URL=%s\nGHL_API_KEY=key-%s\n"
                "GHL_LOCATION_ID=loc-%s\n" % (self.fakes.nc_base, self.fakes.ghl_base, name, name))
        token = "ui-" + uniq(20)
        s = self.server({"ADMIN_TOKEN": token, "TENANTS_DIR": tdir})
        ids = {"a": [], "b": []}
        for name, n in (("a", 1), ("b", 2)):
            for _ in range(n):
                r = s.post("/t/%s/api/v1/webhooks/nowcerts" % name,
                           nowcerts_event("INSURED_INSERT", insured_data()))
                ids[name].append(self.assertJSONAnswer(r, 200)["event_id"])
        self.d.get(s.base + "/ui/")
        self.d.execute_script("sessionStorage.clear();"
                              "sessionStorage.setItem('ncghl.adminToken', arguments[0])", token)
        self.d.get(s.base + "/ui/#/events")
        self.h1("Events")
        self.wait(lambda d: self.visible("#tenant"), "the tenant selector")
        options = [o.get_attribute("value") for o in self.css("#tenant option")]
        self.assertEqual(options, ["a", "b"])

        def listed():
            return sorted(r.get_attribute("data-id") for r in self.css("tbody tr[data-id]"))
        # The first tenant is chosen at first; then b, then a again.
        self.wait(lambda d: listed() == sorted(ids["a"]), "tenant a's one event")
        for name in ("b", "a"):
            self.css("#tenant option[value='%s']" % name)[0].click()
            self.wait(lambda d: listed() == sorted(ids[name]), "tenant %s's events" % name)
        self.assertEqual(self.d.execute_script("return sessionStorage.getItem('ncghl.tenant')"), "a")

    # ---- a real conflict -----------------------------------------------------

    def test_conflict_list_timeline_and_story(self):
        """The same field edited in NowCerts and in GHL before ncghl synced
        either (as test_field_sync.py does it): the conflict shows in the
        list, the person's timeline and the story of the event behind it."""
        token = "ui-" + uniq(20)
        s = self.server({"ADMIN_TOKEN": token, "NOWCERTS_POLL_INTERVAL": 3, "GHL_RATE_LIMIT": 0})
        self.fakes.config("ghl", webhook_url=s.base + "/api/v1/webhooks/ghl")
        self.addCleanup(self.fakes.config, "ghl", webhook_url=None)
        email = "ann.%s@example.com" % uniq()
        ins_id = self.seed_id("nowcerts", "insureds", {
            "firstName": "Ann", "lastName": "Conflict" + uniq(4), "eMail": email,
            "phone": phone(), "addressLine1": "7 Pine St", "state": "FL", "zipCode": "33603",
            "type": "Insured", "insuredType": "Personal", "active": True}, "eMail")
        wait_until(lambda: self.contacts_with_email(email), 30, 0.1, "the contact made in GHL")
        cid = self.contacts_with_email(email)[0]["id"]
        self.settle(s)
        self.fakes.hold_ghl_webhooks()
        nc_phone, ghl_phone = phone(), phone()
        # GHL's edit first: its webhook is held, so ncghl learns of it only
        # when the poll finds the NowCerts edit and reads the contact. Which
        # poll that is does not matter; the NowCerts edit, newer, wins.
        self.fakes.agent_edit("ghl", "contacts", cid, {"phone": "+1" + ghl_phone})
        time.sleep(1.2)  # so the NowCerts edit is the newer one by the records' own times
        self.fakes.agent_edit("nowcerts", "insureds", ins_id, {"phone": nc_phone})
        wait_until(lambda: (self.contact(cid) or {}).get("phone") == "+1" + nc_phone, 30, 0.2,
                   "NowCerts' phone in GHL")
        self.fakes.flush_ghl_webhooks()
        self.settle(s)

        self.d.get(s.base + "/ui/#/conflicts")
        self.d.execute_script("sessionStorage.setItem('ncghl.adminToken', arguments[0])", token)
        self.d.refresh()
        self.h1("Conflicts")
        self.wait(lambda d: len(self.css("table.conflicts tbody tr")) == 1, "one conflict listed")
        row = self.css("table.conflicts tbody tr")[0].text
        self.assertIn("phone", row)
        self.assertIn(nc_phone, row)
        self.assertIn(ghl_phone, row)
        winner = self.css('table.conflicts tbody tr td[data-label="Winner"]')[0].text
        self.assertEqual(winner, "NowCerts")  # the newer side
        self.shot("conflicts")

        self.css("table.conflicts tbody tr a")[0].click()  # its timeline
        self.h1("Person timeline")
        self.wait(lambda d: self.css("table.changes tbody tr"), "the person's field changes")
        text = self.d.find_element(By.TAG_NAME, "main").text
        self.assertIn(ins_id.lower(), text)
        self.assertIn(cid, text)
        actions = {(e.get_attribute("data-action"), e.text) for e in self.css("td.action")}
        self.assertIn(("conflict_won", "conflict won"), actions)
        self.assertIn(("conflict_lost", "conflict lost"), actions)
        self.shot("timeline", full=True)
        # Three a page: the pages hold every change once.
        every = [r.text for r in self.css("table.changes tbody tr")]
        self.d.get(self.d.current_url + "&limit=3")
        paged = []
        while True:
            # A full last page links to an empty one that says so.
            self.wait(lambda d: (self.css("table.changes tbody tr") and
                                 len(paged) + len(self.css("table.changes tbody tr")) <= len(every) and
                                 self.css("table.changes tbody tr")[0].text == every[len(paged)]) or
                      (len(paged) == len(every) and "No older changes" in
                       d.find_element(By.TAG_NAME, "main").text),
                      "the next page of changes")
            paged += [r.text for r in self.css("table.changes tbody tr")]
            if not self.css("#older"):
                break
            self.css("#older")[0].click()
        self.assertEqual(paged, every)
        self.d.back()
        # The story of the event behind a change names its field changes.
        # (The page draws its rows after going back: wait for them.)
        self.wait(lambda d: self.css("table.changes tbody tr a"), "the timeline's rows again")
        self.css("table.changes tbody tr a")[0].click()
        self.wait(lambda d: self.visible("#event-status .badge"), "the event's story")
        self.wait(lambda d: "Field changes" in d.find_element(By.TAG_NAME, "main").text,
                  "the story's field changes")

        # The same person found by e-mail on the People view.
        self.d.get(s.base + "/ui/#/timeline?" + urllib.parse.urlencode({"q": email}))
        self.wait(lambda d: "nowcerts_id=" in d.current_url and self.css("table.changes tbody tr"),
                  "the timeline found by e-mail")

    def contact(self, cid):
        for c in self.fakes.records("ghl", "contacts"):
            if c.get("id") == cid:
                return c
        return None

    def settle(self, s, quiet=1.5):
        """No event pending or running, and no request to either fake, for
        `quiet` seconds (echoes and polls included)."""
        last = [None, time.monotonic()]

        def quiet_now():
            n = (len(self.fakes.requests("ghl")), len(self.fakes.calls("nowcerts", "POST")),
                 len(self.fakes.ghl_webhooks()))
            busy = [e for e in s.events() if e["status"] in ("pending", "running")]
            if n != last[0] or busy:
                last[0], last[1] = n, time.monotonic()
                return False
            return time.monotonic() - last[1] >= quiet
        wait_until(quiet_now, 30, 0.2, "the sync to settle")


if __name__ == "__main__":
    harness.main()
