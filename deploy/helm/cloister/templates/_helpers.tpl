{{/* The labels of an object of component `name` (cloister-serve or cloister-keyserver). */}}
{{- define "cloister.labels" -}}
app.kubernetes.io/name: {{ .name }}
app.kubernetes.io/part-of: cloister
{{- end }}

{{/* The selector of a component's pods. */}}
{{- define "cloister.selector" -}}
app.kubernetes.io/name: {{ .name }}
{{- end }}

{{/* The pods' security context: non-root (the images' user 65532), RuntimeDefault seccomp. */}}
{{- define "cloister.podSecurity" -}}
runAsNonRoot: true
runAsUser: 65532
runAsGroup: 65532
fsGroup: 65532
seccompProfile:
  type: RuntimeDefault
{{- end }}

{{/* The containers' security context. */}}
{{- define "cloister.containerSecurity" -}}
allowPrivilegeEscalation: false
readOnlyRootFilesystem: true
capabilities:
  drop: ["ALL"]
{{- end }}

{{/* What the schema cannot say, checked before anything renders (called from model-server.yaml):
the release namespace is the one the signed enclave dials its key server in, autoscaling bounds are
ordered. */}}
{{- define "cloister.checks" -}}
{{- $ks := .Values.enclave.keyserver }}
{{- $ns := .Release.Namespace }}
{{- $mine := list (printf "cloister-keyserver.%s.svc:4433" $ns) (printf "cloister-keyserver.%s.svc.cluster.local:4433" $ns) }}
{{- if not (has $ks $mine) }}
{{- if regexMatch "^cloister-keyserver\\.[a-z0-9-]+\\.svc(\\.cluster\\.local)?:4433$" $ks }}
{{- $signed := regexReplaceAll "^cloister-keyserver\\.([a-z0-9-]+)\\..*$" $ks "${1}" }}
{{- fail (printf "namespace %q is not the one the signed enclave expects: the model server's enclave was signed to fetch its keys from %s (enclave.keyserver), the key server of namespace %q, so in %q it could never start. Install with -n %s, or build and sign the enclave with KEYSERVER=cloister-keyserver.%s.svc:4433 (deploy/gramine), put its identity into the policy and set enclave.keyserver to that" $ns $ks $signed $ns $signed $ns) }}
{{- else }}
{{- fail (printf "enclave.keyserver %q is not this chart's key server (cloister-keyserver.%s.svc:4433): the signed enclave would fetch its keys elsewhere. Set enclave.keyserver to the KEYSERVER the enclave was built with (deploy/gramine/Makefile); an enclave that uses a key server outside this release needs a deployment without this chart's key server (deploy/k8s, docs/deploy.md)" $ks $ns) }}
{{- end }}
{{- end }}
{{- with .Values.serve.autoscaling }}
{{- if gt (int .minReplicas) (int .maxReplicas) }}
{{- fail (printf "serve.autoscaling.minReplicas (%d) is above serve.autoscaling.maxReplicas (%d)" (int .minReplicas) (int .maxReplicas)) }}
{{- end }}
{{- end }}
{{- end }}
