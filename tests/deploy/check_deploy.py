#!/usr/bin/python3
"""Checks of the deployment files in deploy/ (registered with ctest by
tests/deploy/CMakeLists.txt, one test per check).

  check_deploy.py compose   ROOT               docker-compose accepts the file
  check_deploy.py agreement ROOT               compose, cluster.env, haproxy.cfg,
                                               Dockerfile and the scale test agree
  check_deploy.py haproxy   ROOT               haproxy -c accepts haproxy.cfg
  check_deploy.py systemd   ROOT CHUNKD_BIN    systemd-analyze accepts the unit
  check_deploy.py image     ROOT CHUNKD_BIN... the image gets what it needs

Exit 0 when the check passes, 1 when it fails (every problem is listed),
77 when a tool it needs is not installed (ctest reports the test skipped).
"""

import os
import re
import shutil
import subprocess
import sys
import tempfile

SKIP = 77
# The compose services and chunkd instances of the deployment; the scale test
# starts the same three (tests/integration/haproxy_cluster.h, HC_NODES).
CHUNKD_SERVICES = ["chunkd1", "chunkd2", "chunkd3"]
ALL_SERVICES = {"haproxy", "redis", "mariadb", *CHUNKD_SERVICES}
STORAGE = "/storage/uploads"
# Secrets compose must refuse to run without; dummies for validation.
SECRETS = {"CHUNKD_REDIS_PASSWORD": "check-redis", "CHUNKD_MYSQL_PASSWORD": "check-mysql",
           "MARIADB_ROOT_PASSWORD": "check-root"}
# Directives the unit must carry (value None: present with any value).
UNIT_REQUIRED = {
    "User": "chunkd", "ProtectSystem": "strict", "ReadWritePaths": STORAGE,
    "NoNewPrivileges": "yes", "PrivateTmp": "yes", "ProtectHome": "yes",
    "CapabilityBoundingSet": "", "RestrictAddressFamilies": "AF_INET AF_INET6 AF_UNIX",
    "SystemCallFilter": "@system-service", "LimitNOFILE": None, "KillSignal": "SIGTERM",
    "TimeoutStopSec": None, "Restart": "on-failure", "EnvironmentFile": None,
}
# systemd-analyze security exposure (0-100, lower is safer) the unit must stay
# under; it scores 14 ("1.4 OK") today.
UNIT_EXPOSURE_MAX = 20
# Packages every Debian image has (the runtime stage needs not install them).
BASE_PACKAGES = {"libc6", "libgcc-s1"}

problems = []


def problem(msg):
    problems.append(msg)
    print(f"check_deploy: {msg}", file=sys.stderr)


def finish(what):
    if problems:
        print(f"check_deploy {what}: {len(problems)} problem(s)", file=sys.stderr)
        sys.exit(1)
    print(f"check_deploy {what}: ok")
    sys.exit(0)


def skip(why):
    print(f"check_deploy: skipped: {why}")
    sys.exit(SKIP)


def need(tool, package):
    path = shutil.which(tool) or shutil.which(tool, path="/usr/sbin:/sbin")
    if not path:
        skip(f"{tool} is not installed (Debian package {package}; scripts/lib.sh installs it)")
    return path


def run(argv, env=None, cwd=None):
    return subprocess.run(argv, env=env, cwd=cwd, capture_output=True, text=True, check=False)


def read_env_file(path):
    """KEY=value lines as an ordered dict; '#' comments and blank lines."""
    out = {}
    with open(path, encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            line = line.strip()
            if not line or line.startswith("#"):
                continue
            key, sep, value = line.partition("=")
            if not sep or not re.fullmatch(r"[A-Z][A-Z0-9_]*", key):
                problem(f"{path}:{n}: not KEY=value: {line}")
                continue
            if value != value.strip() or value[:1] in "\"'" or "$" in value:
                problem(f"{path}:{n}: {key}: quotes, spaces or $ are read differently "
                        "by compose and by the scale test")
            out[key] = value
    return out


def clean_env():
    """This process's environment without CHUNKD_*/MARIADB_* variables: a
    developer's shell often exports the stack's (set -a; . stack.env)."""
    return {k: v for k, v in os.environ.items()
            if not k.startswith(("CHUNKD_", "MARIADB_", "COMPOSE_"))}


def compose_argv(root, tool, empty_env_file):
    # --env-file: an operator's deploy/.env must not change what is checked.
    return [tool, "--env-file", empty_env_file, "-f",
            os.path.join(root, "deploy", "docker-compose.yml")]


def render_compose(root):
    tool = need("docker-compose", "docker-compose")
    with tempfile.NamedTemporaryFile("w", suffix=".env") as empty:
        env = clean_env()
        env.update(SECRETS)
        r = run(compose_argv(root, tool, empty.name) + ["config"], env=env)
    if r.returncode != 0:
        problem(f"docker-compose config failed:\n{r.stderr}")
        finish("agreement")
    import yaml  # python3-yaml, a dependency of docker-compose

    return yaml.safe_load(r.stdout)


# ---- compose -------------------------------------------------------------


def check_compose(root):
    tool = need("docker-compose", "docker-compose")
    with tempfile.NamedTemporaryFile("w", suffix=".env") as empty:
        env = clean_env()
        env.update(SECRETS)
        r = run(compose_argv(root, tool, empty.name) + ["config", "-q"], env=env)
        if r.returncode != 0 or r.stderr.strip():
            problem(f"docker-compose config -q: exit {r.returncode}\n{r.stderr}")
        # Each secret is mandatory: without it compose stops and names it,
        # rather than starting a database with an empty password.
        for name in SECRETS:
            env = clean_env()
            env.update({k: v for k, v in SECRETS.items() if k != name})
            r = run(compose_argv(root, tool, empty.name) + ["config", "-q"], env=env)
            if r.returncode == 0 or name not in r.stderr:
                problem(f"docker-compose accepts the file without {name} "
                        f"(exit {r.returncode}): {r.stderr.strip()}")
    finish("compose")


# ---- haproxy -------------------------------------------------------------

UNRESOLVED = re.compile(r"could not resolve address '(chunkd\d)'")


def haproxy_check(tool, cfg, extra_env):
    env = clean_env()
    env = {k: v for k, v in env.items() if not k.startswith("LB_")}
    env.update(extra_env)
    r = run([tool, "-c", "-f", cfg], env=env)
    warnings = [l for l in r.stderr.splitlines() if "[WARNING]" in l or "[ALERT]" in l]
    return r, warnings


def check_haproxy(root):
    tool = need("haproxy", "haproxy")
    cfg = os.path.join(root, "deploy", "haproxy.cfg")
    # As compose runs it (names, resolved by Docker's DNS there): only the
    # names that do not resolve here may be warned about.
    for label, extra in (("defaults", {}), ("compose", {"LB_DNS": "127.0.0.11:53"})):
        r, warnings = haproxy_check(tool, cfg, extra)
        if r.returncode != 0:
            problem(f"haproxy -c ({label}): exit {r.returncode}\n{r.stderr}")
        for w in warnings:
            if not UNRESOLVED.search(w):
                problem(f"haproxy -c ({label}): {w}")
    # As the scale test runs it: addresses only, so not a single warning.
    native = {"LB_BIND": "127.0.0.1:19400", "LB_STATS_BIND": "127.0.0.1:18404",
              "LB_CHECK_INTER": "500ms", "LB_CHECK_TIMEOUT": "1s"}
    for i, name in enumerate(CHUNKD_SERVICES, 1):
        native[f"CHUNKD{i}_ADDR"] = f"127.0.0.1:{19400 + i}"
        native[f"CHUNKD{i}_ADMIN_PORT"] = str(19500 + i)
    r, warnings = haproxy_check(tool, cfg, native)
    if r.returncode != 0:
        problem(f"haproxy -c (scale test): exit {r.returncode}\n{r.stderr}")
    for w in warnings:
        problem(f"haproxy -c (scale test): {w}")
    finish("haproxy")


# ---- systemd -------------------------------------------------------------


def parse_unit(path):
    """{section: [(key, value), ...]}; continuation lines are not used."""
    sections, cur = {}, None
    with open(path, encoding="utf-8") as f:
        for line in f:
            line = line.strip()
            if not line or line[0] in "#;":
                continue
            if line.startswith("[") and line.endswith("]"):
                cur = sections.setdefault(line[1:-1], [])
                continue
            key, _, value = line.partition("=")
            if cur is not None:
                cur.append((key.strip(), value.strip()))
    return sections


def check_systemd(root, chunkd_bin):
    tool = need("systemd-analyze", "systemd")
    unit = os.path.join(root, "deploy", "chunkd.service")
    service = parse_unit(unit).get("Service", [])
    keys = {}
    for k, v in service:
        keys.setdefault(k, []).append(v)
    for k, want in UNIT_REQUIRED.items():
        if k not in keys:
            problem(f"chunkd.service: [Service] has no {k}=")
        elif want is not None and want not in keys[k]:
            problem(f"chunkd.service: {k}={keys[k]}, expected {want!r}")
    execs = keys.get("ExecStart", [])
    if len(execs) != 1 or not execs[0].startswith("/usr/local/bin/chunkd "):
        problem(f"chunkd.service: ExecStart={execs}, expected /usr/local/bin/chunkd ...")
    # chunkd reads /proc/sys/kernel/random/boot_id and /proc/meminfo; with
    # ProcSubset=pid it would run without both, quietly (resumes only from
    # synced offsets, no batched syncs).
    if "pid" in keys.get("ProcSubset", []):
        problem("chunkd.service: ProcSubset=pid hides /proc/meminfo and the boot id from chunkd")
    # The browser client is served from where the install steps put it.
    web = re.search(r"--web-root (\S+)", execs[0] if execs else "")
    if not web:
        problem("chunkd.service: ExecStart has no --web-root (the default is the build tree)")
    else:
        with open(unit, encoding="utf-8") as f:
            head = f.read()
        if f"cp -r web {os.path.dirname(web.group(1))}/" not in head:
            problem(f"chunkd.service: --web-root {web.group(1)}, but the install steps do "
                    "not copy web/ there")
    cluster = read_env_file(os.path.join(root, "deploy", "cluster.env"))
    stop = keys.get("TimeoutStopSec", ["0"])[0]
    m = re.fullmatch(r"(\d+)s?", stop)
    grace_ms = int(cluster.get("CHUNKD_SHUTDOWN_GRACE_MS", "5000"))
    if not m or int(m.group(1)) * 1000 <= grace_ms:
        problem(f"chunkd.service: TimeoutStopSec={stop} must exceed shutdown_grace_ms "
                f"({grace_ms} ms) or chunks in flight are killed")

    # verify wants the ExecStart program to exist: check a copy that runs
    # the built chunkd instead of the installed path. Any output is a
    # problem (verify exits 0 on unknown keys and bad values).
    with tempfile.TemporaryDirectory() as d:
        copy = os.path.join(d, "chunkd.service")
        with open(unit, encoding="utf-8") as f:
            text = f.read()
        with open(copy, "w", encoding="utf-8") as f:
            f.write(text.replace("/usr/local/bin/chunkd", os.path.abspath(chunkd_bin)))
        r = run([tool, "verify", copy])
        out = (r.stdout + r.stderr).strip()
        if r.returncode != 0 or out:
            problem(f"systemd-analyze verify: exit {r.returncode}\n{out}")
        r = run([tool, "security", "--offline=yes", f"--threshold={UNIT_EXPOSURE_MAX}", copy])
        if r.returncode != 0:
            problem(f"systemd-analyze security: exposure above {UNIT_EXPOSURE_MAX / 10}:\n"
                    + "\n".join(r.stdout.splitlines()[-5:]) + r.stderr)
    finish("systemd")


# ---- agreement -----------------------------------------------------------


def port_of(addr):
    return addr.rsplit(":", 1)[-1]


def duration_ms(text):
    m = re.fullmatch(r"(\d+)(ms|s|m|h)?", text.strip())
    if not m:
        return None
    mult = {"ms": 1, "s": 1000, "m": 60000, "h": 3600000, None: 1}[m.group(2)]
    return int(m.group(1)) * mult


def haproxy_servers(cfg_text):
    """name -> (default host:port, default admin port) of the chunkd backend."""
    out = {}
    pat = re.compile(r'^\s*server\s+(\S+)\s+"\$\{(\w+)-([^}]+)\}"\s+check\s+port\s+'
                     r'"\$\{(\w+)-(\d+)\}"', re.M)
    for m in pat.finditer(cfg_text):
        out[m.group(1)] = (m.group(3), m.group(5), m.group(2), m.group(4))
    return out


def haproxy_timeout(cfg_text, name):
    m = re.search(rf"^\s*timeout\s+{name}\s+(\S+)", cfg_text, re.M)
    return duration_ms(m.group(1)) if m else None


def dockerfile_env(text):
    env = {}
    for m in re.finditer(r"^ENV\s+((?:.*\\\n)*.*)$", text, re.M):
        for k, v in re.findall(r"(\w+)=(\S+)", m.group(1)):
            env[k] = v
    return env


def check_agreement(root):
    deploy = os.path.join(root, "deploy")
    cluster = read_env_file(os.path.join(deploy, "cluster.env"))
    if not cluster:
        problem("cluster.env sets nothing")
    for key in cluster:
        if not key.startswith("CHUNKD_"):
            problem(f"cluster.env: {key} is not a chunkd setting (CHUNKD_*)")
    doc = render_compose(root)
    services = doc.get("services", {})
    if set(services) != ALL_SERVICES:
        problem(f"compose services are {sorted(services)}, expected {sorted(ALL_SERVICES)}")
    with open(os.path.join(deploy, "haproxy.cfg"), encoding="utf-8") as f:
        cfg = f.read()
    servers = haproxy_servers(cfg)
    if sorted(servers) != CHUNKD_SERVICES:
        problem(f"haproxy.cfg backend servers are {sorted(servers)}, expected {CHUNKD_SERVICES}")
    node_ids, volumes = set(), set()
    for name in CHUNKD_SERVICES:
        svc = services.get(name)
        if not svc:
            continue
        env = {k: ("" if v is None else str(v)) for k, v in (svc.get("environment") or {}).items()}
        for key, value in cluster.items():
            if env.get(key) != value:
                problem(f"compose {name}: {key}={env.get(key)!r}, cluster.env says {value!r}")
        node_ids.add(env.get("CHUNKD_NODE_ID"))
        if env.get("CHUNKD_NODE_ID") != name:
            problem(f"compose {name}: CHUNKD_NODE_ID={env.get('CHUNKD_NODE_ID')!r}, "
                    f"expected {name!r} (the name haproxy.cfg and the logs use)")
        if env.get("CHUNKD_STORAGE_DIR") != STORAGE:
            problem(f"compose {name}: CHUNKD_STORAGE_DIR={env.get('CHUNKD_STORAGE_DIR')!r}")
        mounts = [v for v in svc.get("volumes", []) if str(v).split(":")[1:2] == [STORAGE]]
        if len(mounts) != 1:
            problem(f"compose {name}: no single volume at {STORAGE}: {svc.get('volumes')}")
        else:
            volumes.add(str(mounts[0]).split(":")[0])
        if name in servers:
            addr, admin, _, _ = servers[name]
            if addr != f"{name}:{port_of(env.get('CHUNKD_LISTEN', ''))}":
                problem(f"haproxy.cfg sends {name}'s clients to {addr}, compose listens on "
                        f"{env.get('CHUNKD_LISTEN')}")
            if admin != port_of(env.get("CHUNKD_ADMIN_LISTEN", "")):
                problem(f"haproxy.cfg checks {name} on port {admin}, compose's admin "
                        f"endpoint is {env.get('CHUNKD_ADMIN_LISTEN')}")
        grace = duration_ms(str(svc.get("stop_grace_period", "10s")))
        want = int(cluster.get("CHUNKD_SHUTDOWN_GRACE_MS", "5000"))
        if grace is None or grace <= want:
            problem(f"compose {name}: stop_grace_period {svc.get('stop_grace_period')} "
                    f"must exceed CHUNKD_SHUTDOWN_GRACE_MS ({want} ms)")
        hc = (svc.get("healthcheck") or {}).get("test", [])
        if "/usr/local/bin/chunkd-healthcheck" not in hc:
            problem(f"compose {name}: healthcheck {hc} does not ask the admin endpoint")
    if len(node_ids) != len(CHUNKD_SERVICES):
        problem(f"chunkd node ids are not distinct: {sorted(map(str, node_ids))}")
    if len(volumes) != 1:
        problem(f"chunkd instances do not share one storage volume: {sorted(volumes)}")

    # HAProxy's inactivity timeouts must outlast chunkd's idle timeout, so a
    # quiet client hears chunkd's idle_timeout answer instead of a cut.
    idle = int(cluster.get("CHUNKD_IDLE_TIMEOUT_MS", "300000"))
    for t in ("client", "server"):
        v = haproxy_timeout(cfg, t)
        if v is None or v <= idle:
            problem(f"haproxy.cfg: timeout {t} ({v} ms) must exceed CHUNKD_IDLE_TIMEOUT_MS ({idle})")
    # Behind the balancer every client has HAProxy's address.
    if int(cluster.get("CHUNKD_MAX_CONNECTIONS_PER_IP", "1024")) < int(
            cluster.get("CHUNKD_MAX_CONNECTIONS", "10000")):
        problem("cluster.env: CHUNKD_MAX_CONNECTIONS_PER_IP below CHUNKD_MAX_CONNECTIONS "
                "caps the whole balancer, whose address every client has")
    if not re.search(r"^\s*balance\s+leastconn\s*$", cfg, re.M):
        problem("haproxy.cfg: the chunkd backend does not balance leastconn")
    if not re.search(r"^\s*option\s+httpchk\s+GET\s+/health\s*$", cfg, re.M):
        problem("haproxy.cfg: no 'option httpchk GET /health'")

    lb = services.get("haproxy", {})
    ports = [str(p.get("target") if isinstance(p, dict) else p) for p in lb.get("ports", [])]
    m = re.search(r'bind\s+"\$\{LB_BIND-:(\d+)\}"', cfg)
    if not m or not any(p.endswith(m.group(1)) or p == m.group(1) for p in ports):
        problem(f"compose haproxy publishes {ports}, not the frontend port of haproxy.cfg")
    mounted = [str(v) for v in lb.get("volumes", [])]
    if not any(v.endswith(":/usr/local/etc/haproxy/haproxy.cfg:ro") and "haproxy.cfg" in
               v.split(":")[0] for v in mounted):
        problem(f"compose haproxy does not mount deploy/haproxy.cfg: {mounted}")

    # The image's defaults are the ones compose relies on.
    with open(os.path.join(deploy, "Dockerfile"), encoding="utf-8") as f:
        dockerfile = f.read()
    denv = dockerfile_env(dockerfile)
    first = (services.get(CHUNKD_SERVICES[0]) or {}).get("environment") or {}
    for key in ("CHUNKD_LISTEN", "CHUNKD_ADMIN_LISTEN", "CHUNKD_STORAGE_DIR"):
        if denv.get(key) != first.get(key):
            problem(f"Dockerfile ENV {key}={denv.get(key)!r}, compose sets {first.get(key)!r}")
    for key in ("CHUNKD_LISTEN", "CHUNKD_ADMIN_LISTEN"):
        if key in denv and not re.search(rf"^EXPOSE\b.*\b{port_of(denv[key])}\b", dockerfile, re.M):
            problem(f"Dockerfile does not EXPOSE the port of {key}")
    if not re.search(rf'^VOLUME\s+\["{STORAGE}"\]', dockerfile, re.M):
        problem(f"Dockerfile: no VOLUME [\"{STORAGE}\"]")

    # The native scale test runs this cluster: it must read these files.
    with open(os.path.join(root, "tests", "integration", "scale.cmake"), encoding="utf-8") as f:
        scale = f.read()
    for var, name in (("CHUNKD_CLUSTER_ENV", "cluster.env"), ("CHUNKD_HAPROXY_CFG", "haproxy.cfg"),
                      ("CHUNKD_HEALTHCHECK", "chunkd-healthcheck.sh")):
        if not re.search(rf"\b{var}=\S*/{re.escape(name)}\b", scale):
            problem(f"tests/integration/scale.cmake does not hand deploy/{name} to the "
                    f"scale test as {var}")
    if "../../deploy" not in scale:
        problem("tests/integration/scale.cmake does not take its files from deploy/")
    finish("agreement")


# ---- image ---------------------------------------------------------------


def dockerfile_stages(text):
    stages = re.split(r"^FROM\s+", text, flags=re.M)[1:]
    return [s for s in stages]


def dpkg_package(path):
    candidates = {path, os.path.realpath(path)}
    for p in list(candidates):
        if p.startswith("/usr/"):
            candidates.add(p[4:])
        else:
            candidates.add("/usr" + p)
    for p in candidates:
        r = run(["dpkg-query", "-S", p])
        if r.returncode == 0:
            return r.stdout.split(":", 1)[0].strip()
    return None


def needed_packages(binary):
    """Debian packages of the libraries the binary links directly."""
    r = run(["readelf", "-d", binary])
    if r.returncode != 0:
        problem(f"readelf {binary}: {r.stderr.strip()}")
        return {}
    needed = re.findall(r"\(NEEDED\)\s+Shared library: \[([^\]]+)\]", r.stdout)
    r = run(["ldd", binary])
    where = dict(re.findall(r"^\s*(\S+) => (\S+)", r.stdout, re.M))
    out = {}
    for lib in needed:
        path = where.get(lib)
        pkg = dpkg_package(path) if path else None
        if not pkg:
            problem(f"{binary}: cannot tell which package holds {lib} ({path})")
            continue
        out[lib] = pkg.split(":")[0]
    return out


def apt_installs(stage_text):
    pkgs = set()
    for m in re.finditer(r"apt-get install((?:[^\n]*\\\n)*[^\n]*)", stage_text):
        for word in m.group(1).replace("\\\n", " ").split():
            if word.startswith("-") or word in ("&&",):
                if word == "&&":
                    break
                continue
            pkgs.add(word)
    return pkgs


def copy_sources(stage_text):
    """Sources of COPY lines (not --from) of a stage."""
    out = []
    for m in re.finditer(r"^COPY\s+(?!--from)(.*)$", stage_text, re.M):
        words = [w for w in m.group(1).split() if not w.startswith("--")]
        out.extend(words[:-1])
    return out


def ignored(rel, patterns):
    """Whether a .dockerignore made of '*' plus '!path' exceptions keeps rel out."""
    keep = False
    for p in patterns:
        neg = p.startswith("!")
        pat = p[1:] if neg else p
        pat = pat.rstrip("/")
        if pat == "*" or rel == pat or rel.startswith(pat + "/"):
            keep = neg
    return not keep


def check_image(root, binaries):
    for tool, pkg in (("readelf", "binutils"), ("dpkg-query", "dpkg"), ("ldd", "libc-bin"),
                      ("cmake", "cmake")):
        need(tool, pkg)
    with open(os.path.join(root, "deploy", "Dockerfile"), encoding="utf-8") as f:
        text = f.read()
    stages = dockerfile_stages(text)
    if len(stages) != 2 or not stages[0].startswith("debian:12 AS build") or \
            not stages[1].startswith("debian:12-slim"):
        problem("Dockerfile: expected a debian:12 build stage and a debian:12-slim runtime stage")
        finish("image")
    build, runtime = stages
    if "-DBUILD_TESTING=OFF" not in build:
        problem("Dockerfile: the build stage does not configure with -DBUILD_TESTING=OFF")
    # The runtime stage installs exactly the packages the programs link.
    wanted = {}
    for b in binaries:
        for lib, pkg in needed_packages(b).items():
            wanted.setdefault(pkg, set()).add(f"{os.path.basename(b)}:{lib}")
    installed = apt_installs(runtime)
    for pkg, users in sorted(wanted.items()):
        if pkg not in installed and pkg not in BASE_PACKAGES:
            problem(f"Dockerfile runtime stage lacks {pkg} (needed by {', '.join(sorted(users))})")
    for pkg in sorted(installed - set(wanted)):
        problem(f"Dockerfile runtime stage installs {pkg}, which no program links")
    for word in ("USER chunkd", "HEALTHCHECK", "ENTRYPOINT [\"/usr/local/bin/chunkd\"]"):
        if word not in runtime:
            problem(f"Dockerfile runtime stage has no {word}")

    # The build stage's COPY lines, filtered by Dockerfile.dockerignore, are
    # enough to configure the project as the image does.
    ignore_path = os.path.join(root, "deploy", "Dockerfile.dockerignore")
    with open(ignore_path, encoding="utf-8") as f:
        patterns = [l.strip() for l in f if l.strip() and not l.startswith("#")]
    sources = copy_sources(build) + copy_sources(runtime)
    for src in sources:
        rel = src.rstrip("/")
        if ignored(rel, patterns):
            problem(f"Dockerfile copies {src}, which Dockerfile.dockerignore leaves out")
        if not os.path.exists(os.path.join(root, rel)):
            problem(f"Dockerfile copies {src}, which does not exist")
    with tempfile.TemporaryDirectory() as d:
        for src in copy_sources(build):
            rel = src.rstrip("/")
            s, t = os.path.join(root, rel), os.path.join(d, "src", rel)
            if os.path.isdir(s):
                shutil.copytree(s, t)
            elif os.path.exists(s):
                os.makedirs(os.path.dirname(t), exist_ok=True)
                shutil.copy2(s, t)
        r = run(["cmake", "-S", os.path.join(d, "src"), "-B", os.path.join(d, "build"),
                 "-DBUILD_TESTING=OFF"])
        if r.returncode != 0:
            problem("the Dockerfile's build context does not configure:\n"
                    + r.stdout[-2000:] + r.stderr[-2000:])
    for script in ("chunkd-healthcheck.sh", "mariadb-init/10-chunkd-schema.sh"):
        r = run(["bash", "-n", os.path.join(root, "deploy", script)])
        if r.returncode != 0:
            problem(f"deploy/{script}: {r.stderr.strip()}")
    hc = os.path.join(root, "deploy", "chunkd-healthcheck.sh")
    if not os.access(hc, os.X_OK):
        problem("deploy/chunkd-healthcheck.sh is not executable")
    init = os.path.join(root, "deploy", "mariadb-init", "10-chunkd-schema.sh")
    if os.access(init, os.X_OK):
        problem("deploy/mariadb-init/10-chunkd-schema.sh is executable: the MariaDB "
                "entrypoint would run it without its helpers instead of sourcing it")
    finish("image")


def main(argv):
    if len(argv) < 3:
        print(__doc__, file=sys.stderr)
        return 2
    what, root = argv[1], os.path.abspath(argv[2])
    if what == "compose":
        check_compose(root)
    elif what == "agreement":
        check_agreement(root)
    elif what == "haproxy":
        check_haproxy(root)
    elif what == "systemd" and len(argv) == 4:
        check_systemd(root, argv[3])
    elif what == "image" and len(argv) >= 4:
        check_image(root, argv[3:])
    print(__doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv))
