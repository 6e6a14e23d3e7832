{{/* Names and labels shared by the templates. */}}
{{- define "drydock.name" -}}
{{- .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "drydock.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "drydock.selectorLabels" -}}
app.kubernetes.io/name: {{ include "drydock.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "drydock.labels" -}}
{{ include "drydock.selectorLabels" . }}
app.kubernetes.io/version: {{ .Values.image.tag | default .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
{{- end -}}

{{- define "drydock.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- .Values.serviceAccount.name | default (include "drydock.fullname" .) -}}
{{- else -}}
{{- .Values.serviceAccount.name | default "default" -}}
{{- end -}}
{{- end -}}

{{- define "drydock.secretName" -}}
{{- .Values.secrets.existingSecret | default (include "drydock.fullname" .) -}}
{{- end -}}

{{/* Namespace of the sandbox pods (DRYDOCK_KUBERNETES_NAMESPACE). */}}
{{- define "drydock.sandboxNamespace" -}}
{{- .Values.sandbox.kubernetes.namespace | default .Release.Namespace -}}
{{- end -}}
