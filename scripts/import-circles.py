#!/usr/bin/env python3
"""Finds import circles between the files of a Rust crate (`make lint` runs it on src/).

File-level import graph of a Rust crate: an edge A -> B when A's code names an item defined in B
(through crate::, super::, self:: or a child module path, following `pub use` re-exports), and the
strongly connected components of that graph. Comments and `#[cfg(test)] mod tests { ... }` blocks
inside a file are left out (a file's own tests may use anything)."""
import os,re,sys,collections
root=(sys.argv[1] if len(sys.argv)>1 else 'src').rstrip('/')
files={}
for d,_,fs in os.walk(root):
    for f in fs:
        if f.endswith('.rs'):
            p=os.path.join(d,f); parts=p[len(root)+1:-3].split('/')
            if parts[-1] in ('mod','lib','main'): parts=parts[:-1]
            files[tuple(parts)]=p
def strip(s):
    s=re.sub(r'//[^\n]*','',s)
    s=re.sub(r'"(\\.|[^"\\])*"','""',s)
    m=re.search(r'#\[cfg\(test\)\]\s*mod tests \{',s)
    if m: s=s[:m.start()]
    return s
src={m:strip(open(p).read()) for m,p in files.items()}
defs={m:set(re.findall(r'(?m)^(?:pub(?:\([^)]*\))? )?(?:async )?(?:unsafe )?(?:struct|enum|fn|const|static|type|trait|union) (\w+)',s)) | set(re.findall(r'(?m)^macro_rules! (\w+)',s)) for m,s in src.items()}
def expand_use(s):
    """(path segments) for every use-tree leaf, with visibility flag."""
    out=[]
    for m in re.finditer(r'(?m)^\s*(pub(?:\([^)]*\))? )?use ([^;]+);',s):
        pub=bool(m.group(1)); tree=re.sub(r'\s+','',m.group(2))
        def walk(prefix,t):
            # split top-level commas
            if t.startswith('{') and t.endswith('}'):
                depth=0;cur='';items=[]
                for c in t[1:-1]:
                    if c=='{':depth+=1
                    if c=='}':depth-=1
                    if c==',' and depth==0: items.append(cur);cur=''
                    else: cur+=c
                if cur: items.append(cur)
                for it in items: walk(prefix,it)
                return
            i=t.find('::{')
            if i>=0: walk(prefix+t[:i].split('::'),t[i+2:]); return
            t=t.split('as')[0] if re.search(r'\bas\b',t) else t
            segs=[x for x in t.split('::') if x]
            out.append((pub,prefix+segs))
        walk([],tree)
    return out
uses={m:expand_use(s) for m,s in src.items()}
def absolute(me,segs):
    """Turn a path as written in module `me` into an absolute module path list, or None."""
    if not segs: return None
    if segs[0]=='crate': return segs[1:]
    base=list(me)
    if segs[0]=='self': return base+segs[1:]
    if segs[0]=='super':
        while segs and segs[0]=='super': base=base[:-1]; segs=segs[1:]
        return base+segs
    if tuple(base+[segs[0]]) in files: return base+segs
    return None
def resolve(path,seen=None):
    """The file defining the item at absolute `path` (list), following re-exports."""
    seen=seen or set()
    for n in range(len(path),-1,-1):
        mod=tuple(path[:n])
        if mod in files:
            rest=path[n:]
            if not rest or rest==['*'] or rest==['self']: return mod
            name=rest[0]
            if name in defs[mod]: return mod
            for pub,segs in uses[mod]:
                if not pub: continue
                if segs[-1]==name or segs[-1]=='*':
                    a=absolute(mod,segs[:-1] if segs[-1]=='*' else segs)
                    if a is None: continue
                    key=(mod,name)
                    if key in seen: continue
                    target=resolve(a if segs[-1]!='*' else a+[name],seen|{key})
                    if target and target!=mod: return target
            return mod
    return None
edges=collections.defaultdict(set)
for me,s in src.items():
    paths=[]
    for pub,segs in uses[me]:
        a=absolute(me,segs)
        if a is not None: paths.append(a)
    for m in re.finditer(r'\b((?:crate|super|self)(?:::\w+)+)',s):
        a=absolute(me,m.group(1).split('::'))
        if a is not None: paths.append(a)
    for a in paths:
        t=resolve(a)
        if t is not None and t!=me: edges[me].add(t)
sys.setrecursionlimit(10000)
index={};low={};st=[];on=set();res=[];c=[0]
def sc(v):
    index[v]=low[v]=c[0];c[0]+=1;st.append(v);on.add(v)
    for w in edges.get(v,()):
        if w not in index: sc(w);low[v]=min(low[v],low[w])
        elif w in on: low[v]=min(low[v],index[w])
    if low[v]==index[v]:
        comp=[]
        while True:
            w=st.pop();on.discard(w);comp.append(w)
            if w==v:break
        if len(comp)>1: res.append(comp)
for v in files:
    if v not in index: sc(v)
print(f'{len(files)} files, {sum(len(v) for v in edges.values())} edges, {len(res)} circles')
for comp in res:
    names=sorted('::'.join(x) or 'lib' for x in comp)
    print('circle:',names)
    for a in comp:
        for b in edges[a]:
            if b in comp: print('   ','::'.join(a),'->','::'.join(b))
sys.exit(1 if res else 0)
