//! The page's style sheet, detail panel and script, inline so the page needs no network.

pub const CSS: &str = r#"
*{box-sizing:border-box}
body{font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,"DejaVu Sans",sans-serif;color:#1d1d1f;margin:0 auto;max-width:1232px;padding:0 14px 40px}
header{border-bottom:1px solid #ddd;margin-bottom:8px}
h1{font-size:24px;margin:16px 0 2px}
h2{font-size:19px;margin:26px 0 6px;padding-top:6px;border-top:1px solid #eee}
h3{font-size:15px;margin:16px 0 4px}
.sub{color:#555;margin:0 0 6px}
nav{margin:6px 0 10px}nav a{margin-right:14px;text-decoration:none;color:#2a5db0}
.banner{background:#fff4e5;border:1px solid #f0c36d;padding:6px 10px;border-radius:4px}
.intro,.note{color:#444;margin:4px 0 8px}.note{font-size:12.5px;color:#666}
.muted{color:#888}.found{color:#a40000;font-weight:600}
table{border-collapse:collapse;width:100%;margin:4px 0 8px;font-size:13px}
th,td{border:1px solid #ddd;padding:3px 6px;vertical-align:top;text-align:left}
th{background:#f3f4f6;cursor:pointer;user-select:none;font-weight:600}
th[aria-sort=ascending]::after{content:" \25B2";font-size:10px}
th[aria-sort=descending]::after{content:" \25BC";font-size:10px}
td.n,th.n{text-align:right;font-variant-numeric:tabular-nums}
td.zero{color:#bbb}
tbody tr:nth-child(even){background:#fafafa}
code{font:12px/1.35 ui-monospace,"DejaVu Sans Mono",Menlo,Consolas,monospace}
table.compact{font-size:12.5px}table.compact th{font-size:12px}
table.summary td,table.summary th{white-space:nowrap}
table.buckets td{overflow-wrap:normal}
table.buckets td.sig,table.buckets td.what{overflow-wrap:anywhere}
table.buckets th.sig{min-width:220px}table.buckets th.what{min-width:200px}
table.buckets tr.bucket{cursor:pointer}table.buckets tr.bucket:hover{background:#eef4ff}
th{overflow-wrap:normal;word-break:normal;hyphens:none}
.st{display:inline-block;border-radius:3px;padding:0 5px;font-size:11.5px;font-weight:600;white-space:nowrap}
.st-new{background:#c62828;color:#fff}.st-regression{background:#6a1b9a;color:#fff}.st-open{background:#ef6c00;color:#fff}
.st-known{background:#e3e8f0;color:#33415c}.st-expected{background:#eceff1;color:#555}.st-fixed{background:#e6f4ea;color:#1e6b34}
#triage h2{font-size:21px;border-top:0;margin-top:12px}
ol.findings{list-style:none;padding:0;margin:4px 0 10px}
li.finding{border:1px solid #e2c4c4;border-left:4px solid #c62828;border-radius:4px;padding:5px 10px;margin:0 0 6px;background:#fffafa}
li.finding .line{font-size:14.5px}li.finding .meta{color:#555;font-size:12.5px;margin-left:6px}
li.finding .act{font-size:12.5px;color:#333;margin-top:1px;overflow-wrap:anywhere}
li.finding details.draft summary{font-size:12.5px;margin:2px 0 0}
li.finding pre{background:#f6f8fa;border:1px solid #e3e3e3;padding:8px;font:12px/1.4 ui-monospace,"DejaVu Sans Mono",monospace;white-space:pre-wrap;overflow-wrap:anywhere;max-height:360px;overflow:auto}
details.settled,details.legend-st{margin:4px 0}details.legend-st ul{margin:4px 0;padding-left:18px;font-size:13px}
.tag{display:inline-block;background:#fde7e7;color:#8a1111;border-radius:3px;padding:0 4px;font-size:11.5px;margin-top:2px}
.tools{margin:4px 0}.tools input{font:inherit;padding:3px 6px}
svg.chart{display:block;max-width:100%;height:auto;margin:4px 0}
svg .lbl{font-size:12px;fill:#333}svg .tick{font-size:11px;fill:#666}svg .axis{font-size:11px;fill:#777}
svg .val{font-size:11.5px;fill:#333}svg .cell{font-size:11px}svg .kind{fill:#888;font-size:10.5px}
.legend{font-size:12.5px;color:#444;margin:2px 0 10px}.key{margin-right:14px;white-space:nowrap}
.key i{display:inline-block;width:12px;height:12px;margin-right:4px;vertical-align:-1px;border-radius:2px}
details summary{cursor:pointer;margin:4px 0}
#panel{position:fixed;top:0;right:0;bottom:0;width:min(640px,92vw);background:#fff;box-shadow:-4px 0 18px rgba(0,0,0,.18);overflow:auto;padding:12px 18px;z-index:10}
#panel h3{margin:4px 30px 6px 0;font-size:14px;overflow-wrap:anywhere}
#panel pre{background:#f6f8fa;border:1px solid #e3e3e3;padding:8px;overflow:auto;max-height:48vh;font:12px/1.4 ui-monospace,"DejaVu Sans Mono",monospace;white-space:pre-wrap;overflow-wrap:anywhere}
#panel dl{display:grid;grid-template-columns:130px 1fr;gap:2px 10px;margin:6px 0}#panel dt{color:#555}#panel dd{margin:0}
#panel .close{position:absolute;top:8px;right:12px;font-size:20px;border:0;background:none;cursor:pointer}
#panel .empty{color:#999}
"#;

pub const PANEL: &str = "<aside id=\"panel\" hidden aria-label=\"bucket detail\"><button class=\"close\" title=\"close (Esc)\">&#215;</button><div id=\"panel-body\"></div></aside>\n";

pub const JS: &str = r#"
(function(){
  'use strict';
  function val(td){
    var v=td.getAttribute('data-v');
    if(v!==null&&v!==''&&!isNaN(+v))return +v;
    return td.textContent.trim().toLowerCase();
  }
  function cmp(a,b){
    if(typeof a===typeof b)return a<b?-1:a>b?1:0;
    return typeof a==='number'?-1:1;
  }
  Array.prototype.forEach.call(document.querySelectorAll('table.sortable'),function(t){
    var ths=t.tHead.rows[0].cells;
    Array.prototype.forEach.call(ths,function(th,i){
      th.addEventListener('click',function(){
        var asc=th.getAttribute('aria-sort')!=='ascending';
        Array.prototype.forEach.call(ths,function(h){h.removeAttribute('aria-sort');});
        th.setAttribute('aria-sort',asc?'ascending':'descending');
        var body=t.tBodies[0];
        var keyed=Array.prototype.map.call(body.rows,function(r,j){return [val(r.cells[i]),j,r];});
        keyed.sort(function(a,b){return (asc?1:-1)*cmp(a[0],b[0])||a[1]-b[1];});
        var frag=document.createDocumentFragment();
        keyed.forEach(function(k){frag.appendChild(k[2]);});
        body.appendChild(frag);
        t.dispatchEvent(new Event('sorted'));
      });
    });
  });
  // The bucket table shows one page of the rows that pass the filter, in the current order.
  var filter=document.getElementById('bucket-filter'),table=document.getElementById('bucket-table');
  var sfilter=document.getElementById('status-filter');
  var more=document.getElementById('bucket-more'),limit=table?+table.getAttribute('data-page'):0,texts=null;
  function page(){
    if(!table)return;
    var q=filter.value.trim().toLowerCase(),st=sfilter?sfilter.value:'',shown=0,matched=0,rows=table.tBodies[0].rows;
    if(q&&!texts){texts={};Array.prototype.forEach.call(rows,function(r){texts[r.id]=r.textContent.toLowerCase();});}
    Array.prototype.forEach.call(rows,function(r){
      var ok=(!q||texts[r.id].indexOf(q)>=0)&&(!st||r.getAttribute('data-status')===st);
      if(ok){matched++;r.hidden=shown>=limit;if(!r.hidden)shown++;}else r.hidden=true;
    });
    document.getElementById('bucket-count').textContent=matched+' bucket(s)'+(shown<matched?', the first '+shown+' shown':'');
    more.hidden=shown>=matched;
  }
  if(table){
    filter.addEventListener('input',function(){limit=+table.getAttribute('data-page');page();});
    if(sfilter)sfilter.addEventListener('change',function(){limit=+table.getAttribute('data-page');page();});
    more.addEventListener('click',function(){limit=Infinity;page();});
    table.addEventListener('sorted',page);
  }
  var data=null,panel=document.getElementById('panel'),pbody=document.getElementById('panel-body');
  function el(tag,text,cls){var e=document.createElement(tag);if(text!==undefined&&text!==null)e.textContent=String(text);if(cls)e.className=cls;return e;}
  function confirmText(c){
    if(c===null||c===undefined)return null;
    if(typeof c!=='object')return String(c);
    var parts=[];if(c.status!==undefined)parts.push(String(c.status));
    Object.keys(c).forEach(function(k){if(k!=='status')parts.push(k+': '+(typeof c[k]==='object'?JSON.stringify(c[k]):c[k]));});
    return parts.join('; ');
  }
  function show(i){
    if(!data)data=JSON.parse(document.getElementById('bucket-data').textContent);
    var b=data[i];if(!b)return;
    pbody.textContent='';
    var h=el('h3');h.appendChild(el('code',b.signature));pbody.appendChild(h);
    pbody.appendChild(el('p',b.explanation));
    var dl=el('dl');
    function row(k,v,cls){dl.appendChild(el('dt',k));dl.appendChild(el('dd',v,cls));}
    row('class',b['class']);row('cases',b.count);row('first case','#'+b.first);row('smallest case','#'+b.smallest);
    var s=b.shrink;
    row('minimized',s?(s.ranks+' rank(s), '+s.tokens+' token(s), '+s.experts+' expert(s), model dim '+s.model+' ('+s.kept+' of '+s.tried+' steps kept'+(s.truncated?', budget ran out':'')+')'):'not shrunk');
    row('known bug',b.known.length?b.known.join('; '):'-');
    var c=confirmText(b.confirm);row('real PyTorch',c===null?'':c,c===null?'empty':'');
    pbody.appendChild(dl);
    pbody.appendChild(el('h4','What diverged'));pbody.appendChild(el('pre',b.detail));
    pbody.appendChild(el('h4','Replay (from the report\'s directory)'));
    var file=b.repro||b.first_case;
    pbody.appendChild(el('pre','shardfuzz replay '+file+(b.repro?'':'\nshardfuzz shrink '+b.first_case+" --signature '"+b.signature.replace(/'/g,"'\\''")+"'")));
    var p=el('p');
    if(b.repro){var a=el('a','reproducer');a.href=b.repro;p.appendChild(a);p.appendChild(document.createTextNode(' \u00b7 '));}
    var f=el('a','first case');f.href=b.first_case;p.appendChild(f);
    pbody.appendChild(p);
    pbody.appendChild(el('h4','Case ('+file+')'));pbody.appendChild(el('pre',b['case']));
    panel.hidden=false;panel.scrollTop=0;
    var row=document.getElementById('b-'+i);if(row)row.hidden=false;
  }
  function hide(){panel.hidden=true;}
  if(table){
    table.tBodies[0].addEventListener('click',function(e){
      if(e.target.closest('a'))return;
      var tr=e.target.closest('tr');if(tr&&tr.hasAttribute('data-i'))show(+tr.getAttribute('data-i'));
    });
  }
  panel.querySelector('.close').addEventListener('click',hide);
  document.addEventListener('keydown',function(e){if(e.key==='Escape')hide();});
  // #b-N scrolls to bucket N's row and opens its detail; #detail-N opens it where the page is.
  function fromHash(){
    var m=/^#(?:b|detail)-(\d+)$/.exec(location.hash);if(!m)return;
    show(+m[1]);
    if(location.hash.charAt(1)==='b'){var r=document.getElementById('b-'+m[1]);if(r)r.scrollIntoView();}
  }
  window.addEventListener('hashchange',fromHash);fromHash();
})();
"#;
