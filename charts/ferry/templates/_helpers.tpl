{{/* Labels every object carries. */}}
{{- define "ferry.labels" -}}
app.kubernetes.io/name: ferry
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end }}

{{- define "ferry.image" -}}
{{ .Values.image.repository }}:{{ .Values.image.tag | default .Chart.AppVersion }}
{{- end }}

{{/* The controller's push address, as gateways dial it. */}}
{{- define "ferry.controllerAddress" -}}
ferry-controller.{{ .Release.Namespace }}.svc:{{ .Values.controller.pushPort }}
{{- end }}

{{- define "ferry.controllerSelector" -}}
app.kubernetes.io/name: ferry
app.kubernetes.io/component: controller
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}
