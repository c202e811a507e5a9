# Turns scripts/bench.sh's runs file (one line per run: workload=, system=,
# run= and the load generator's key=value figures) into the results table:
# the median of each figure over the runs, chunkd beside the baselines and
# the peer measured in the same run, their ratios, and PASS/MISS per target.
#
#   awk -v cores=N -v maxthreads=N -v quick=0|1 -v md=FILE -v csv=FILE \
#       -f bench/table.awk RUNS_FILE
#
# Writes the Markdown table to md and the same figures as CSV to csv.

function add(key, v) {
    if (v == "")
        return
    n[key]++
    vals[key, n[key]] = v + 0
}

# Median of the runs of one figure; "" when it was not measured.
function med(wl, sys, f,    key, k, i, j, t, a) {
    key = wl SUBSEP sys SUBSEP f
    k = n[key]
    if (k == 0)
        return ""
    for (i = 1; i <= k; i++)
        a[i] = vals[key, i]
    for (i = 2; i <= k; i++)
        for (j = i; j > 1 && a[j - 1] > a[j]; j--) {
            t = a[j]; a[j] = a[j - 1]; a[j - 1] = t
        }
    if (k % 2)
        return a[(k + 1) / 2]
    return (a[k / 2] + a[k / 2 + 1]) / 2
}

function fmt(v, digits) {
    if (v == "")
        return "–"
    return sprintf("%." digits "f", v)
}

function ratio(a, b) {
    if (a == "" || b == "" || b == 0)
        return "–"
    return sprintf("%.2f×", a / b)
}

function size_text(bytes) {
    if (bytes >= 1048576 && bytes % 1048576 == 0)
        return (bytes / 1048576) " MiB"
    if (bytes >= 1024 && bytes % 1024 == 0)
        return (bytes / 1024) " KiB"
    return bytes " B"
}

function describe(wl,    s, u, c, i) {
    s = info[wl, "size"] + 0; u = info[wl, "uploads"] + 0
    c = info[wl, "concurrency"] + 0; i = info[wl, "idle"] + 0
    if (wl == "sha")
        return "SHA-256 of one core (OpenSSL, 64 KiB blocks)"
    if (i > 0)
        return sprintf("%d connections held, %d of them uploading %s each", i + u, u, size_text(s))
    if (u == 1)
        return sprintf("1 upload of %s, chunk %s", size_text(s), size_text(info[wl, "chunk"]))
    if (c >= u)
        return sprintf("%d parallel uploads of %s", u, size_text(s))
    return sprintf("%d uploads of %s from %d clients", u, size_text(s), c)
}

function csv_ratio(r) {
    return r == "–" ? "" : substr(r, 1, length(r) - 1)
}

# One row of figures: chunkd, baseline with sync, ratio, the hashing
# baseline, ratio, baseline without sync, tus, ratio. ratios=1 for figures
# where more is better.
function row(label, figure, f, digits, ratios, scale,    c, s, h, ns, t, rb, rh, rt) {
    c = med(wl_cur, "chunkd", f); s = med(wl_cur, "sinksync", f)
    h = med(wl_cur, "sinksha", f)
    ns = med(wl_cur, "sink", f); t = med(wl_cur, "tus", f)
    if (scale != 1) {
        if (c != "") c /= scale
        if (s != "") s /= scale
        if (h != "") h /= scale
        if (ns != "") ns /= scale
        if (t != "") t /= scale
    }
    rb = ratios ? ratio(c, s) : "–"
    rh = ratios ? ratio(c, h) : "–"
    rt = ratios ? ratio(c, t) : "–"
    printf "| %s | %s | %s | %s | %s | %s | %s | %s | %s | %s |\n", label, figure, fmt(c, digits),
           fmt(s, digits), rb, fmt(h, digits), rh, fmt(ns, digits), fmt(t, digits), rt > md
    printf "figures,\"%s\",\"%s\",%s,%s,%s,%s,%s,%s,%s,%s,\n", label, figure, c, s, csv_ratio(rb),
           h, csv_ratio(rh), ns, t, csv_ratio(rt) > csv
}

function target(text, measured, ok) {
    verdict = quick ? "not judged (--quick)" : (ok ? "PASS" : "MISS")
    printf "| %s | %s | %s |\n", text, measured, verdict > md
    printf "target,\"%s\",\"%s\",,,,,,,,,%s\n", text, measured, verdict > csv
}

# chunkd against tus on one figure where more is better.
function vs_tus(wl, f, times, what,    c, t) {
    if (!(wl in seen))
        return
    c = med(wl, "chunkd", f); t = med(wl, "tus", f)
    if (t == "" || c == "") {
        target(sprintf("%s: faster than @tus/server%s", what, times > 1 ? sprintf(", ≥ %d×", times) : ""),
               "peer not measured", 0)
        return
    }
    target(sprintf("%s: faster than @tus/server%s", what, times > 1 ? sprintf(", ≥ %d×", times) : ""),
           sprintf("%.2f× (%.1f vs %.1f)", c / t, c, t), c > t * (times > 1 ? times : 1))
}

{
    wl = ""; sys = ""
    for (i = 1; i <= NF; i++) {
        eq = index($i, "=")
        if (eq == 0)
            continue
        k = substr($i, 1, eq - 1); v = substr($i, eq + 1)
        if (k == "workload") wl = v
        else if (k == "system") sys = v
        else kv[k] = v
    }
    if (wl == "" || sys == "") {
        delete kv
        next
    }
    if (!(wl in seen)) {
        seen[wl] = 1
        order[++nwl] = wl
    }
    if (sys == "chunkd" || !((wl, "size") in info))
        for (k in kv)
            if (k == "size" || k == "uploads" || k == "concurrency" || k == "idle" || k == "chunk")
                info[wl, k] = kv[k]
    for (k in kv)
        add(wl SUBSEP sys SUBSEP k, kv[k])
    if (kv["size"] != "" && kv["ok"] != "" && kv["srv_cpu_s"] != "" && kv["ok"] * kv["size"] > 0)
        add(wl SUBSEP sys SUBSEP "cpu_per_gb", kv["srv_cpu_s"] / (kv["ok"] * kv["size"] / 1e9))
    if (kv["srv_hwm_kb"] != "")
        add(wl SUBSEP sys SUBSEP "hwm_mib", kv["srv_hwm_kb"] / 1024)
    if (kv["srv_rss_end_kb"] != "")
        add(wl SUBSEP sys SUBSEP "rss_end_mib", kv["srv_rss_end_kb"] / 1024)
    if (kv["idle"] != "")
        add(wl SUBSEP sys SUBSEP "answered", kv["ok"] + kv["idle_ok"])
    delete kv
}

END {
    print "| workload | figure | chunkd | baseline: sink + fdatasync | chunkd / baseline | sink + fdatasync + SHA-256 | chunkd / it | sink, no sync | @tus/server (no fsync) | chunkd / tus |" > md
    print "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|" > md
    # Figures rows fill the measurements; target rows put the target in
    # "workload", what was measured in "figure", and PASS/MISS in "verdict".
    print "table,workload,figure,chunkd,baseline_sync,chunkd_over_baseline,sink_sync_sha,chunkd_over_sink_sync_sha,sink_nosync,tus,chunkd_over_tus,verdict" > csv
    for (w = 1; w <= nwl; w++) {
        wl_cur = order[w]
        d = describe(wl_cur)
        if (wl_cur == "sha") {
            v = med("sha", "openssl", "mb_s")
            printf "| %s | MB/s | – | %s | – | – | – | – | – | – |\n", d, fmt(v, 0) > md
            printf "figures,\"%s\",\"MB/s\",,%s,,,,,,,\n", d, v > csv
            continue
        }
        if (info[wl_cur, "idle"] + 0 > 0) {
            row(d, "uploads/s", "uploads_s", 1, 1, 1)
            row(d, "server threads (max)", "srv_threads_max", 0, 0, 1)
            row(d, "server peak RSS, MiB (VmHWM)", "hwm_mib", 1, 0, 1)
            row(d, "server RSS at the end, MiB", "rss_end_mib", 1, 0, 1)
            row(d, "uploads + idle answers that succeeded", "answered", 0, 0, 1)
            continue
        }
        if (wl_cur == "small") {
            row(d, "uploads/s", "uploads_s", 0, 1, 1)
            row(d, "p50 latency, ms", "p50_ms", 1, 0, 1)
            row(d, "p99 latency, ms", "p99_ms", 1, 0, 1)
            continue
        }
        row(d, "MB/s", "mb_s", 0, 1, 1)
        row(d, "server CPU s per GB", "cpu_per_gb", 2, 0, 1)
    }
    print "" > md
    print "| target | measured (medians) | verdict |" > md
    print "|---|---|---|" > md
    if ("single" in seen) {
        c = med("single", "chunkd", "mb_s"); s = med("single", "sinksync", "mb_s")
        target("single upload ≥ 70% of loopback-to-file (with fdatasync)",
               s > 0 ? sprintf("%.0f%% (%.1f of %.1f MB/s)", 100 * c / s, c, s) : "–", s > 0 && c >= 0.7 * s)
    }
    if ("par16" in seen) {
        c = med("par16", "chunkd", "mb_s"); s = med("par16", "sinksync", "mb_s")
        target("16 parallel ≥ 80% of baseline aggregate (with fdatasync)",
               s > 0 ? sprintf("%.0f%% (%.1f of %.1f MB/s)", 100 * c / s, c, s) : "–", s > 0 && c >= 0.8 * s)
    }
    if ("small" in seen) {
        c = med("small", "chunkd", "uploads_s")
        target("small files ≥ 1,500 uploads/s", sprintf("%.0f uploads/s", c), c >= 1500)
    }
    if ("conns" in seen) {
        th = med("conns", "chunkd", "srv_threads_max"); h = med("conns", "chunkd", "hwm_mib")
        a = med("conns", "chunkd", "answered")
        want = info["conns", "uploads"] + info["conns", "idle"]
        target(sprintf("%d connections: at most cores×2+4 = %d threads", want, maxthreads),
               sprintf("%d threads", th), th <= maxthreads)
        target(sprintf("%d connections: RSS < 256 MiB", want), sprintf("%.1f MiB peak", h), h < 256)
        target(sprintf("%d connections: every upload and idle connection answered", want),
               sprintf("%d of %d", a, want), a == want)
    }
    vs_tus("single", "mb_s", 1, "single upload")
    vs_tus("par16", "mb_s", 1, "16 parallel")
    vs_tus("par256", "mb_s", 1, "256 parallel")
    vs_tus("small", "uploads_s", 3, "small files")
    vs_tus("conns", "uploads_s", 3, "many connections")
    print "" > md
    print "chunkd syncs to disk (fdatasync at checkpoints and at completion, plus the directory); " \
          "@tus/file-store and \"sink, no sync\" never call fsync, so their figures include bytes " \
          "still only in the page cache. \"sink + fdatasync + SHA-256\" hashes every byte as it " \
          "arrives, as chunkd does, and answers with the digest: the least chunkd must do. " \
          "MB = 10^6 bytes. Each figure is the median of the runs." > md
}
