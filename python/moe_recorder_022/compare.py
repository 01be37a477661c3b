"""Print, per recorded 0.2.2 case, which outputs differ from the unsharded layer and by how much."""
import json,sys
for l in open(sys.argv[1]):
    r=json.loads(l); s=r['case']['subject']; oc=r['outcome']; ref=r['reference']
    line=f"{r['id']} B{s['dims']['batch']} L{s['dims']['seq']} E{s['dims']['experts']} K{s['dims']['top_k']} ep{s['parallel']['ep']} {s['router']['score_func']} norm={s['router']['route_norm']} ok={oc['ok']}"
    if oc['ok'] and ref['ok']:
        d={}
        for k,v in ref['outputs'].items():
            a=oc['outputs'][k]['value']['values']; b=v['values']
            d[k]=round(max(abs(x-y) for x,y in zip(a,b)),6)
        g=oc['outputs']['grad.gate']['locals']
        d['gate_rank_diff']=round(max(abs(x-y) for x,y in zip(g[0]['values'],g[1]['values'])),6)
        line+=' '+str(d)
    else: line+=' '+str(oc.get('error'))[:200]
    print(line)
