#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include "rt_optim.h"
/* bench/optim_speed.c: the optimizer update per parameter (AdamW, or SGD with
 * momentum: optim_speed OUT s), best of 8 steps over 8 M parameters; writes
 * the parameters and state to OUT so two builds can be compared byte for
 * byte (cmp). docs/benchmarks.md. */
static double now(void){struct timespec t;clock_gettime(CLOCK_MONOTONIC,&t);return t.tv_sec+t.tv_nsec/1e9;}
int main(int argc,char**argv){
  int64_t n=8<<20; PlanConfig c; memset(&c,0,sizeof c);
  c.optimizer = argc>2 && argv[2][0]=='s' ? PLAN_OPT_SGD : PLAN_OPT_ADAMW; c.lr=1e-3;c.beta1=0.9;c.beta2=0.999;c.eps=1e-8;c.weight_decay=0.01;c.momentum=0.9;
  float*p=malloc(n*4),*g=malloc(n*4),*s=calloc(2*n,4);
  unsigned x=1; for(int64_t i=0;i<n;i++){x=x*1103515245u+12345u;p[i]=(x>>8)/16777216.0f-0.5f;x=x*1103515245u+12345u;g[i]=((x>>8)/16777216.0f-0.5f)*1e-2f;}
  double best=1e9;
  for(int r=0;r<8;r++){double t=now(); rt_optim_step(&c,p,g,s,n,r+1,1e-3); t=now()-t; if(t<best)best=t;}
  printf("%.2f ns/param\n",best/n*1e9);
  FILE*f=fopen(argv[1],"wb"); fwrite(p,4,n,f); fwrite(s,4,2*n,f); fclose(f);
}
