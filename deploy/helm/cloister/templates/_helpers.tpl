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
