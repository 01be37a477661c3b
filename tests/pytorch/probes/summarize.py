"""Summarize probe outputs: one row per case: redistributions, result, comms, per version."""
import sys, re, collections
def parse(fn):
    cases = collections.OrderedDict(); cur = None
    for line in open(fn):
        line = line.rstrip("\n")
        m = re.match(r"=== (.*?)\s+\(torch [^)]*\)$", line)
        if m:
            cur = m.group(1); cases[cur] = {"redist": [], "result": "", "comms": "", "exc": ""}; continue
        if cur is None: continue
        if "redistribute[dispatch]" in line:
            cases[cur]["redist"].append(line.split("] ", 1)[1].strip())
        elif "# RESULT" in line:
            cases[cur]["result"] = line.split("# RESULT", 1)[1].strip()
        elif line.startswith("  comms:"):
            c = line.split(":", 1)[1].strip()
            c = c.replace('"c10d_functional.', "").replace("_into_tensor", "").replace('"', "").replace("_tensor", "")
            cases[cur]["comms"] = c
        elif "EXC" in line:
            cases[cur]["exc"] = line.strip()
    return cases
files = sys.argv[1:]
data = [parse(f) for f in files]
keys = list(data[0].keys())
for k in keys:
    cells = []
    for d in data:
        c = d.get(k)
        if c is None: cells.append("-"); continue
        s = c["exc"] or (c["result"] + ("; redist " + ", ".join(c["redist"]) if c["redist"] else "") + "; " + c["comms"])
        cells.append(s)
    if len(set(cells)) == 1:
        print(f"| {k} | {cells[0]} | same | same |")
    else:
        print(f"| {k} | " + " | ".join(cells) + " |")
