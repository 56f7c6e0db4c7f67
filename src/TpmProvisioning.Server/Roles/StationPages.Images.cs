using System.Globalization;
using System.Text;
using TpmProvisioning.Station;

namespace TpmProvisioning.Server.Roles;

/// <summary>The images page: size, assigned family and hash per image, and a hash button whose progress comes over <c>/ws/sha256</c>.</summary>
internal static partial class StationPages
{
    public static string Images(IReadOnlyList<StationImage> images, StationRole.Caller caller)
    {
        var sb = new StringBuilder();
        sb.Append($"<p class=\"muted\">{images.Count} image(s). <span id=\"live\"></span></p>");
        sb.Append("<table id=\"images\"><thead><tr><th>Name</th><th>Type</th><th>Size</th><th>Modified (UTC)</th><th>Assigned to</th><th>SHA-256</th><th></th></tr></thead><tbody>");
        foreach (var i in images)
        {
            string size = i.Size.ToString("N0", CultureInfo.InvariantCulture) + " bytes";
            string hash = i.HashStatus switch
            {
                "complete" => $"<code>{E(i.Sha256)}</code>",
                "pending" => $"calculating {(int)Math.Floor((i.HashProgress ?? 0) * 100)}%",
                "n/a" => "<span class=\"muted\">folder: see analysis</span>",
                _ => "<span class=\"muted\">not computed</span>",
            };
            string button = i.HashStatus == "n/a" ? "" : "<button class=\"hash\" type=\"button\">hash</button> <progress class=\"hashbar\" max=\"100\" value=\"0\" style=\"display:none\"></progress> <span class=\"pct\"></span>";
            sb.Append($"<tr class=\"image\" data-name=\"{E(i.Name)}\"><td>{E(i.Name)}</td><td>{E(i.Type)}</td><td>{E(size)}</td><td>{E(StationRole.Ts(i.Modified))}</td>")
              .Append($"<td>{(i.AssignedTo.Count == 0 ? "<span class=\"muted\">none</span>" : E(string.Join(", ", i.AssignedTo)))}</td><td class=\"sha\">{hash}</td><td>{button}</td></tr>");
        }
        sb.Append("</tbody></table>");
        sb.Append("""
            <script>
            (function(){
            var ws=null,queue=[];
            function row(n){var rows=document.querySelectorAll('tr.image');for(var i=0;i<rows.length;i++){if(rows[i].getAttribute('data-name')===n)return rows[i];}return null;}
            function open(){ws=new WebSocket((location.protocol==='https:'?'wss://':'ws://')+location.host+'/ws/sha256');
            ws.onopen=function(){document.getElementById('live').textContent='live';while(queue.length)ws.send(queue.shift());};
            ws.onmessage=function(m){var d=JSON.parse(m.data);var r=row(d.image_name);if(!r)return;var bar=r.querySelector('progress.hashbar'),pct=r.querySelector('.pct'),sha=r.querySelector('.sha');
            if(d.status==='pending'){bar.style.display='';var p=d.progress_percent||0;bar.value=p;pct.textContent=p+'%';sha.textContent='calculating';(window.hashProgress=window.hashProgress||[]).push(p);}
            else if(d.status==='complete'){bar.style.display='';bar.value=100;pct.textContent='100%';sha.innerHTML='';var c=document.createElement('code');c.textContent=d.sha256;sha.appendChild(c);r.setAttribute('data-sha256',d.sha256);}
            else if(d.status==='error'){pct.textContent='error: '+(d.error||'');}};}
            function send(msg){if(!ws)open();if(ws.readyState===1)ws.send(msg);else queue.push(msg);}
            var buttons=document.querySelectorAll('button.hash');
            for(var i=0;i<buttons.length;i++){buttons[i].addEventListener('click',function(e){var r=e.target.closest('tr');send(JSON.stringify({action:'get_sha256',image_name:r.getAttribute('data-name')}));});}
            })();
            </script>
            """);
        return Layout("Images", sb.ToString(), caller);
    }
}
