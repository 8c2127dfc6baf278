{{/* The chart name, or nameOverride. */}}
{{- define "jwks-operator.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* The full name of the release's objects (at most 63 characters, a DNS label). */}}
{{- define "jwks-operator.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{/* Labels of every object. */}}
{{- define "jwks-operator.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{ include "jwks-operator.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/component: operator
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}

{{/* Labels that select the operator pods (immutable once installed). */}}
{{- define "jwks-operator.selectorLabels" -}}
app.kubernetes.io/name: {{ include "jwks-operator.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{/* The operator's ServiceAccount. */}}
{{- define "jwks-operator.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "jwks-operator.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- required "serviceAccount.name is required when serviceAccount.create is false" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/* The operator image. */}}
{{- define "jwks-operator.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}

{{/* The image of the JWKS server Deployments: serverImage, else the operator image. */}}
{{- define "jwks-operator.serverImage" -}}
{{- default (include "jwks-operator.image" .) .Values.serverImage }}
{{- end }}

{{/* Refuses values that would make an unsafe or broken install. */}}
{{- define "jwks-operator.validate" -}}
{{- if and (gt (int .Values.replicas) 1) (not .Values.leaderElection.enabled) }}
{{- fail "replicas > 1 needs leaderElection.enabled=true: without it every replica would reconcile" }}
{{- end }}
{{- if and .Values.watchNamespace .Values.secretNamespaces }}
{{- fail "secretNamespaces is for cluster-wide installs; with watchNamespace the operator touches Secrets in that namespace only" }}
{{- end }}
{{- if not (has .Values.logFormat (list "json" "text")) }}
{{- fail (printf "logFormat must be json or text, not %q" .Values.logFormat) }}
{{- end }}
{{- end }}
